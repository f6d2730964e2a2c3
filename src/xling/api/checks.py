"""The Python API's own argument checks: a value of another type or range is one XlingError, as the command line's
are (not a TypeError, or PyTorch's error, from deep inside)."""

from __future__ import annotations

import math
import numbers
import os
import reprlib
from collections.abc import Mapping

from ..errors import XlingError
from ..notation import is_numpy_bool

_WHAT = {int: "a whole number", float: "a number", str: "text", bool: "True or False", os.PathLike: "a path",
         type(None): "None", Mapping: "a mapping"}


def _is(value, kind: type) -> bool:
    if kind in (int, float):  # (NumPy's numbers too; whole numbers pass as floats; True is not a number here)
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and (kind is float or isinstance(value, numbers.Integral)))
    if kind is bool:
        return isinstance(value, bool) or is_numpy_bool(value)
    return isinstance(value, kind)


def check_arguments(**arguments: tuple) -> None:
    """Each argument's (value, kind or tuple of kinds[, lo, hi]); the bounds apply to numbers (None passes them)."""
    for name, (value, kind, *bounds) in arguments.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not any(_is(value, k) for k in kinds):
            raise XlingError(f"{name} must be {' or '.join(_WHAT[k] for k in kinds)}, got {reprlib.repr(value)}")
        if bounds and value is not None and not (
                (isinstance(value, numbers.Integral) or math.isfinite(value)) and bounds[0] <= value <= bounds[1]):
            raise XlingError(f"{name} must be between {bounds[0]} and {bounds[1]}, got {reprlib.repr(value)}")
