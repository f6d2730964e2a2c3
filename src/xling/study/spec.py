"""Studies: a paper experiment as a named grid of runs (the file format, and finding study files).

A run's id is its group, its grid values and a hash of its full resolved config, e.g.
``mix-p0.1-s2-1a2b3c4d``, so editing the base config makes new runs instead of silently reusing
old ones. `build_study` documents the format.
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (
    RunConfig,
    apply_overrides,
    check_keys_apply,
    flatten,
    from_dict,
    load_yaml,
    to_dict,
    validate,
)
from ..data.mixture import Mixture
from ..data.transforms import ORDER_VERSION, WORD_ORDER
from ..errors import XlingError, a_kind
from ..fsio import json_key
from ..notation import dotted_get, is_name
from ..recipes import packaged

STUDY_KEYS = ("name", "description", "paper", "scale", "base", "grid", "groups", "linked", "figures", "one_x",
              "paper_models", "notes")
GROUP_KEYS = ("set", "grid")
FIGURE_KEYS = ("x", "y", "mlpe", "where", "roles", "title")
# Short labels of common grid keys in run ids ("" shows the value alone, e.g. "anchored", "cpu-s").
ABBREV = {"languages.p": "p", "train.seed": "s", "train.data_fraction": "f", "languages.schedule": "sch",
          "languages.num_clones": "k", "languages.frac_clone": "fc", "languages.vocab": "", "model.preset": "",
          "train.steps": "steps", "tokenizer.vocab_size": "v", "languages.transforms": "", "languages.mix": "",
          "languages.temperature": "T", "languages.unimax_epochs": "unimax"}
SEED_KEY = "train.seed"


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its grid values and its full resolved config (a plain dict)."""

    study: str
    group: str
    dims: dict[str, Any]
    config: dict
    id: str

    def run_dir(self, root: str | Path) -> Path:
        return Path(root) / self.study / self.id

    @functools.cached_property
    def run_config(self) -> RunConfig:
        """The config as the typed RunConfig."""
        return from_dict(self.config)

    @functools.cached_property
    def mixture(self) -> Mixture:
        """Which languages the run trains and how it mixes them (effective p, expected shares)."""
        return Mixture.of(self.run_config)

    @property
    def setting(self) -> str:
        """The run's group and grid values without the seed: what seeds are averaged over."""
        dims = [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in self.dims.items() if k != SEED_KEY]
        return f"{self.group}: {', '.join(dims)}" if dims else self.group

    def to_json(self) -> dict:
        return {"study": self.study, "group": self.group, "dims": self.dims, "config": self.config, "id": self.id}

    @classmethod
    def from_json(cls, d: dict) -> RunSpec:
        return cls(d["study"], d["group"], d["dims"], d["config"], d["id"])


@dataclass
class Study:
    name: str
    description: str
    paper: str  # what of the paper it reproduces; "" or "none": no published values are set beside its results
    scale: str
    runs: list[RunSpec]
    figures: list[dict] = field(default_factory=list)
    one_x: float = 1.0  # the data fraction that counts as the paper's "1x" training length
    paper_models: dict[str, str] = field(default_factory=dict)  # our preset -> the paper's model
    notes: str = ""
    path: Path | None = None

    def spec(self, run_id: str) -> RunSpec:
        return next(r for r in self.runs if r.id == run_id)

    def command(self, action: str, root: str | Path | None = None, top_level: bool = False) -> str:
        """`xling study ACTION` (`top_level`: `xling ACTION`, e.g. report) of this study in `root`, as a hint in
        messages: its name if xling finds it by name, else its file; --root unless it is the default."""
        found = available_studies().get(self.name)
        target = self.name if self.path is None or (found and found.resolve() == self.path.resolve()) else self.path
        where = [] if root is None or Path(root) == runs_root() else ["--root", str(root)]
        return shlex.join(["xling", *([] if top_level else ["study"]), action, str(target), *where])

    def training_length(self) -> tuple[float, int | None, int]:
        """What its runs train, for planning: (their data fractions summed, in the study's 1x; their tokens where
        the budget is pinned, train.budget_tokens, else None; how many runs train a fixed number of steps instead)."""
        by_fraction = [r.run_config.train for r in self.runs if not r.run_config.train.steps]
        pinned = all(train.budget_tokens for train in by_fraction) and by_fraction
        tokens = sum(round(train.data_fraction * train.budget_tokens) for train in by_fraction) if pinned else None
        return (sum(train.data_fraction for train in by_fraction) / self.one_x, tokens,
                len(self.runs) - len(by_fraction))

    @property
    def compares_with_paper(self) -> bool:
        """Whether its report sets the paper's published numbers beside its own (your own experiment may not)."""
        return self.paper.strip().lower() not in ("", "none")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):  # e.g. languages.transforms {EN2: [clone, inverted]} -> EN2:clone+inverted
        return ",".join(f"{k}:{_fmt(v)}" for k, v in value.items()) or "default"
    if isinstance(value, list):
        return "+".join(map(_fmt, value))
    return str(value)


def _non_default(config: dict, defaults: dict) -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            sub = _non_default(value, defaults[key])
            if sub:
                out[key] = sub
        elif defaults.get(key, object()) != value:
            out[key] = value
    return out


def config_hash(config: dict) -> str:
    """8 hex digits of the resolved config's non-default values (its display name excluded).

    Leaving out values equal to the defaults means a new config field (added with a default that
    keeps the old behaviour) does not orphan existing runs; every value that differs counts. A run
    that reorders words also counts the version of what the word-order transforms do
    (transforms.ORDER_VERSION): a run trained before they changed is not taken for a new one.
    """
    body = _non_default({k: v for k, v in config.items() if k != "name"}, to_dict(RunConfig()))
    steps = config.get("languages", {}).get("transforms", {}).values()
    if any(how in WORD_ORDER for language in steps for how in language):
        body["word_order_version"] = ORDER_VERSION
    return json_key(body, 8)


def run_label(group: str, dims: dict[str, Any]) -> str:
    parts = [group] + [f"{ABBREV.get(k, k.split('.')[-1])}{_fmt(v)}" for k, v in dims.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def _require_mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise XlingError(f"{where} must be a mapping, not {a_kind(value)}")
    return value


def _check_keys(data: dict, allowed, where: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(allowed)}"
            raise XlingError(f"{where}: unknown key '{key}' ({hint})")


def _grid(value, where: str) -> dict[str, list]:
    grid = _require_mapping(value, where)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise XlingError(f"{where}.{key} must be a non-empty list of values, e.g. [0.5, 0.1]")
    return grid


def build_study(data: dict, path: Path | None = None) -> Study:
    """Expand and validate a study (a parsed YAML mapping): every run config is checked here.

    A study file (``NAME.yaml``; the paper's studies ship with xling, see `xling study list`)
    declares a base run config and groups of runs::

        name: headline-cpu
        description: ...
        paper: Table 1 (50/50, 90/10)
        base: {...a run config...}
        grid: {train.seed: [0, 1, 2]}           # crossed into every group (a group may override a key)
        groups:
          ladder: {set: {languages.p: 0.0}, grid: {train.data_fraction: [0.1, 0.5, 1.0], train.seed: [0]}}
          mix:    {grid: {languages.p: [0.5, 0.1]}}
        linked: {model.preset: {cpu-m: {train.lr: 0.001}}}   # keys that follow another key's value
        figures: [{x: languages.p, y: ppl, mlpe: true}]

    ``set`` fixes config keys for a group; ``grid`` crosses lists of values; ``linked`` sets keys
    from the value a run has for another key (each model size its own learning rate).
    """
    where = f"study {path}" if path else "study"
    _check_keys(data, STUDY_KEYS, where)
    name = data.get("name") or (path.stem if path else "")
    if not name:
        raise XlingError(f"{where}: give the study a name (name: ..., letters, digits, '.', '_' or '-'): its runs "
                         "go to ROOT/NAME/")
    if not is_name(str(name)):
        raise XlingError(f"{where}: 'name' must be letters, digits, '.', '_' or '-' (not first), got {name!r}")
    base = _require_mapping(data.get("base"), f"{where}: base")
    dotted = {k: v for k, v in base.items() if isinstance(k, str) and "." in k}  # {model.preset: x}, as `set` has it
    nested = {k: v for k, v in base.items() if k not in dotted}
    twice = sorted(set(dotted) & set(flatten(nested)))
    if twice:
        raise XlingError(f"{where}: base gives {twice[0]} twice, nested and as a dotted key: keep one")
    base = apply_overrides(copy.deepcopy(nested), dotted)
    top_grid = _grid(data.get("grid"), f"{where}: grid")
    linked = _linked(data.get("linked"), f"{where}: linked")
    groups = _require_mapping(data.get("groups"), f"{where}: groups") or {"runs": {}}
    runs, seen, ignored = [], {}, ""
    for group, body in groups.items():
        for label, dims, cfg_data in _expand(str(group), body, base, top_grid, linked, where):
            try:
                cfg = from_dict(cfg_data)
                validate(cfg, recorded=True)
                Mixture.of(cfg)  # the languages that languages.mix and languages.transforms name exist
            except XlingError as exc:
                raise XlingError(f"{where}: run {label}: {exc}") from None
            try:  # a key the run ignores: a warning, not a refusal (removing it changes the runs' ids)
                check_keys_apply(cfg)
            except XlingError as exc:
                key = str(exc).split(" ", 1)[0]
                if any(d == key or d.startswith(f"{key}.") for d in dims):  # set by the grid yet ignored: one run
                    raise XlingError(f"{where}: run {label}: {exc}: the grid sets {key}, which its runs ignore: "
                                     "runs that differ only in it would be one run") from None
                ignored = ignored or (f"{where}: run {label}: {exc} (the runs ignore it; removing it from the "
                                      "study would change their ids, so runs trained already would train again)")
            config = to_dict(cfg)
            digest = config_hash(config)
            if digest in seen:
                raise XlingError(f"{where}: runs {seen[digest]} and {label} have the same config; remove one of them")
            seen[digest] = label
            runs.append(RunSpec(str(name), str(group), dims, config, f"{label}-{digest}"))
    if ignored:
        logging.getLogger(__name__).warning(ignored)
    figures = data.get("figures") or []
    _check_figures(figures, where, runs)
    one_x = data.get("one_x", 1.0)
    if not isinstance(one_x, (int, float)) or one_x <= 0:
        raise XlingError(f"{where}: one_x must be a positive number (the data fraction of the paper's 1x)")
    return Study(str(name), str(data.get("description", "")).strip(), str(data.get("paper", "")),
                 str(data.get("scale", "")), runs, figures, float(one_x),
                 dict(_require_mapping(data.get("paper_models"), f"{where}: paper_models")),
                 str(data.get("notes", "")).strip(), path)


def _expand(group: str, body, base: dict, top_grid: dict, linked: dict, where: str):
    """(label, grid values, config dict) of each run of one group."""
    body = _require_mapping(body, f"{where}: groups.{group}")
    _check_keys(body, GROUP_KEYS, f"{where}: groups.{group}")
    fixed = _require_mapping(body.get("set"), f"{where}: groups.{group}.set")
    own = _grid(body.get("grid"), f"{where}: groups.{group}.grid")
    both = [key for key in flatten(dict(fixed)) if key in own or key in top_grid]
    if both:  # the grid's value would win without a word
        key = both[0]
        raise XlingError(f"{where}: groups.{group} sets {key} and " + (
            "its grid varies it: give it in one of them" if key in own else
            f"the study's grid varies it: to fix it for this group, give it in the group's grid ({key}: [VALUE])"))
    grid = {**own, **{k: v for k, v in top_grid.items() if k not in own}}  # the group's own keys name runs first
    for combo in itertools.product(*grid.values()):
        dims = dict(zip(grid, combo))
        label = run_label(group, dims)
        cfg_data = apply_overrides(apply_overrides(copy.deepcopy(base), dict(fixed)), dict(dims))
        for key, by_value in linked.items():
            value = flatten(cfg_data).get(key)
            if str(value) in by_value:
                apply_overrides(cfg_data, dict(by_value[str(value)]))
        cfg_data["name"] = label
        yield label, dims, cfg_data


def _linked(value, where: str) -> dict[str, dict[str, dict]]:
    """{key: {value: {key: value, ...}}}: what each value of a key brings with it."""
    linked = _require_mapping(value, where)
    for key, by_value in linked.items():
        for option, settings in _require_mapping(by_value, f"{where}.{key}").items():
            _require_mapping(settings, f"{where}.{key}.{option}")
    return {key: {str(option): settings for option, settings in by_value.items()} for key, by_value in linked.items()}


def figure_selects(figure: dict, run: RunSpec) -> bool:
    """Whether a figure of the study draws this run: its x is one of the run's grid keys and its config has every
    value of the figure's `where`."""
    return figure["x"] in run.dims and all(dotted_get(run.config, k) == v for k, v in (figure.get("where") or {}).items())


def _check_figures(figures, where: str, runs: list[RunSpec]) -> None:
    grid_keys = list(dict.fromkeys(key for r in runs for key in r.dims))
    for i, fig in enumerate(figures):
        _check_keys(_require_mapping(fig, f"{where}: figures[{i}]"), FIGURE_KEYS, f"{where}: figures[{i}]")
        if not isinstance(fig.get("x"), str) or not fig["x"]:
            raise XlingError(f"{where}: figures[{i}] needs x, the grid key on the horizontal axis (e.g. x: languages.p)")
        if fig["x"] not in grid_keys:  # (the figure would be left out of the report without a word)
            close = difflib.get_close_matches(fig["x"], grid_keys, n=1)
            raise XlingError(f"{where}: figures[{i}].x {fig['x']!r} is not a key of the study's grids"
                             + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; its grid keys: {', '.join(grid_keys) or 'none'}")
        if fig.get("y", "ppl") not in ("ppl", "teff"):
            raise XlingError(f"{where}: figures[{i}].y must be ppl or teff, got {fig.get('y')!r}")
        _require_mapping(fig.get("where"), f"{where}: figures[{i}].where")
        if not any(figure_selects(fig, r) for r in runs):  # (the report would leave it out without a word)
            raise XlingError(f"{where}: figures[{i}] selects no run: no run with {fig['x']} in its grid has "
                             + ", ".join(f"{k} = {v!r}" for k, v in fig["where"].items())
                             + "; give values the study's runs have")
        if not set(fig.get("roles") or []) <= {"L1", "L2"}:
            raise XlingError(f"{where}: figures[{i}].roles must list L1 and/or L2, got {fig.get('roles')!r}")


# --------------------------------------------------------------------------- finding studies


def study_dirs() -> list[Path]:
    """Where user study files are looked up first: $XLING_STUDIES (path-separated), then ./studies."""
    dirs = [Path(p) for p in os.environ.get("XLING_STUDIES", "").split(os.pathsep) if p] + [Path("studies")]
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def available_studies() -> dict[str, Path]:
    """{name: file} of every study: the user's directories first (a name there wins), then xling's own."""
    found: dict[str, Path] = {}
    for d in study_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    for name, p in packaged("studies").items():
        found.setdefault(name, p)
    return found


def replaces_shipped(path: Path) -> bool:
    """Whether a study file of yours has the name of one xling ships, which it replaces where found by name."""
    shipped = packaged("studies").get(path.stem)
    return shipped is not None and shipped.resolve() != path.resolve()


def find_study(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or (os.sep in name and not path.is_dir()):
        if not path.is_file():
            raise XlingError(f"study file not found: {path}")
        return path
    found = available_studies()
    if name in found:  # before a directory of the same name (a study's runs under ./runs/NAME)
        return found[name]
    if path.is_dir():  # a run directory, or the runs root, where a study's name is asked for
        is_run = (path / "config.yaml").is_file()
        raise XlingError(f"{path} is a {'run ' if is_run else ''}directory, not a study: give a study's name "
                         "(xling study list) or its YAML file")
    if name in packaged("configs"):  # a run config's name where a study is asked for
        raise XlingError(f"{name} is a run config, not a study: xling train {name} (studies: xling study list)")
    close = difflib.get_close_matches(name, list(found), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listing = ", ".join(found)
    raise XlingError(f"unknown study '{name}': {hint}available: {listing}")


def load_study(name: str) -> Study:
    path = find_study(name)
    data = load_yaml(path)
    declared = data.get("name") if isinstance(data, dict) else None
    if declared and declared != path.stem and path.stem == name:  # found by its name: it must answer to it
        raise XlingError(f"{path} names its study '{declared}', so its runs and report would go under that name, "
                         f"which no command finds: set name: {path.stem} (or leave name out), or name the file "
                         f"{declared}.yaml")
    return build_study(data, path)


def runs_root(root: str | Path | None = None) -> Path:
    """Where run directories live: --root, else $XLING_RUNS, else ./runs."""
    path = Path(root or os.environ.get("XLING_RUNS") or "runs")
    if path.exists() and not path.is_dir():  # (else every study read as not started, a train failed late)
        where = "--root" if root else "$XLING_RUNS" if os.environ.get("XLING_RUNS") else "./runs"
        raise XlingError(f"{where} ({path}) is a file, not a directory of runs: give a directory")
    return path
