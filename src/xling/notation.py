"""Short notations inside configs: dotted keys (train.steps), a usable name, a schedule of p ('0.1_0.9'), a part
of the Bible's books ('2/7'), one split of a Hugging Face dataset ('wikitext:wikitext-103-raw-v1@test'), and NumPy's
True and False where a bool is meant (a notebook hands them over)."""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import XlingError


def is_numpy_bool(value: Any) -> bool:
    """numpy.True_ and numpy.False_ (their type is numpy.bool_, named numpy.bool since NumPy 2)."""
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def parse_schedule(text: str) -> list[float]:
    """'0.1_0.9' -> [0.1, 0.9]: K equal stages of training, each with its own total p."""
    parts = str(text).strip().split("_")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise XlingError(f"languages.schedule: malformed schedule '{text}': write stage probabilities joined by "
                         "'_', e.g. 0.1_0.9") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise XlingError(f"languages.schedule '{text}' has probabilities outside [0, 1]: {bad}")
    return values


def books_part(books: str) -> tuple[int, int] | None:
    """'2/7' -> (2, 7): part I of N (1 <= I <= N); None for anything else."""
    match = re.fullmatch(r"([1-9][0-9]*)/([1-9][0-9]*)", str(books))
    part = (int(match.group(1)), int(match.group(2))) if match else None
    return part if part and part[0] <= part[1] else None


def dataset_split(spec: str) -> tuple[str, str]:
    """'NAME[:CONFIG]@SPLIT' or 'FOLDER@SPLIT' -> (the dataset, SPLIT); (spec, "") without one, or where spec itself
    is an existing path (a folder named with '@')."""
    source, at, split = spec.rpartition("@")
    if at and source and split and "/" not in split and not os.path.exists(os.path.expanduser(spec)):
        return source, split
    return spec, ""


NAME_RULE = "use letters, digits, '.', '_' or '-' (not first), at most 100 characters"


def is_name(text: str) -> bool:
    """Whether `text` can name a file or directory safely: no separators, no '..', no leading '.' or '-'."""
    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", text))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted key: value}: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dotted_get(data: dict, key: str):
    """The value at a dotted key of a nested dict ('languages.mix' -> data['languages']['mix']); None if absent."""
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys (`train.steps`) in a nested dict; unknown keys are caught by `from_dict`."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise XlingError(f"--{dotted}: '{part}' is not a section")
            node = child
        # language names match in any case: languages.mix.fr sets FR's share (other keys: exact, checked later)
        same = parts[-1]
        if parts[:2] == ["languages", "mix"] or parts[:2] == ["languages", "transforms"]:
            same = next((k for k in node if isinstance(k, str) and k.lower() == same.lower()), same)
        node[same] = value
    return data
