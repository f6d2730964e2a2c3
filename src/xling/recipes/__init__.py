"""The recipes shipped with xling: run configs and the paper's studies, as package data.

They are found with `importlib.resources`, so a wheel install lists and runs them as an
editable one does. `xling config NAME` prints a packaged config; copy it to edit it.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from ..errors import XlingError


def _folder(kind: str) -> Path:
    # xling is installed as plain files (no zip import), so the resource folder is a real path
    return Path(str(resources.files(__name__) / kind))


def packaged(kind: str) -> dict[str, Path]:
    """{name: path} of the packaged recipes of one kind ("configs" or "studies"), sorted."""
    return {p.stem: p for p in sorted(_folder(kind).glob("*.yaml"))}


def config_path(name_or_path: str | Path) -> Path:
    """A config file: the path as given when it exists, else a packaged config of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    configs = packaged("configs")
    if path.suffix in ("", ".yaml") and path.stem in configs and len(path.parts) == 1:
        return configs[path.stem]  # before a directory of the same name (its run, runs/NAME)
    if path.is_dir():
        run = " (a run's config: its config.yaml)" if (path / "config.yaml").is_file() else ""
        raise XlingError(f"{path} is a directory: give a config file or a packaged config's name{run}")
    if str(name_or_path) in packaged("studies"):  # a study's name where a run config is asked for
        raise XlingError(f"{name_or_path} is a study, not a run config: xling study run {name_or_path}")
    close = difflib.get_close_matches(str(name_or_path), list(configs), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise XlingError(f"config file not found: {path} ({hint}packaged configs: {', '.join(configs)})")
