"""YAML as a config language should be read: the YAML 1.2 core schema, no duplicate keys.

PyYAML follows YAML 1.1, which silently misreads configs: `_` is a digit separator (the schedule
`0_1` becomes the integer 1, `0.5_1` becomes 0.51), `no`/`off` are booleans, `2026-01-01` is a
date, `010` is octal and `2e-3` is a string. Here only true/false are booleans, numbers are
plain decimals (`1e-3` included), and everything else stays the string it looks like. A key
written twice in one mapping is an error instead of the last one silently winning. The dumper
quotes exactly the strings this loader would otherwise read as something else.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import XlingError, a_kind

_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")
_BOOL = re.compile(r"^(true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(~|null|Null|NULL|)$")
_RESOLVERS = (("tag:yaml.org,2002:bool", _BOOL, "tTfF"), ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
              ("tag:yaml.org,2002:float", _FLOAT, "-+0123456789."), ("tag:yaml.org,2002:null", _NULL, "~nN\0"))


def _core_schema(cls):
    """Give a PyYAML loader or dumper class the YAML 1.2 core scalars instead of YAML 1.1's."""
    cls.yaml_implicit_resolvers = {}
    for tag, pattern, first in _RESOLVERS:
        cls.add_implicit_resolver(tag, pattern, list(first))
    # "" (an empty value) has no first character to dispatch on; PyYAML looks it up under ""
    cls.yaml_implicit_resolvers.setdefault("", []).append(("tag:yaml.org,2002:null", _NULL))
    return cls


@_core_schema
class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool, type(None))):  # `? [a, b]`: no config has such a key
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a name or a number, not a list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}': keep one of them", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _int(loader, node):
    try:
        return int(loader.construct_scalar(node), 10)  # decimal: "010" is ten, not YAML 1.1's octal eight
    except ValueError:  # over Python's 4,300 digits
        raise yaml.constructor.ConstructorError(None, None, "a number with too many digits", node.start_mark) from None


def _float(loader, node):
    text = loader.construct_scalar(node).lower()
    return float(text.replace(".inf", "inf").replace(".nan", "nan"))


_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)


@_core_schema
class _Dumper(yaml.SafeDumper):
    pass


def load(text: str):
    """Parse YAML text (raises yaml.YAMLError, with a mark, on malformed input or a duplicate key)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:  # thousands of nested [ or {: no config is that deep
        raise yaml.MarkedYAMLError(problem="nested too deeply") from None


def dump(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def parse_value(text: str):
    """One value as typed on a command line: `2000` -> 2000, `0_1` stays a string; malformed YAML stays text."""
    try:
        return load(text)
    except yaml.YAMLError:
        return text


def load_file(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (a config, a study); every problem is one XlingError line."""
    path = Path(path)
    if not path.is_file():
        raise XlingError(f"config file not found: {path}")
    try:
        data = load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "fix the syntax"
        raise XlingError(f"malformed YAML in {path}{where}: {problem}") from None
    except OSError as exc:
        raise XlingError(f"cannot read {path} ({exc.strerror}): check the file and its permissions") from None
    except UnicodeDecodeError:
        raise XlingError(f"{path} is not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise XlingError(f"{path} must hold a mapping of keys (YAML 'key: value' lines), not {a_kind(data)}")
    return data
