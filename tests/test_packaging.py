"""A wheel built from the repository, installed in a fresh virtual environment, finds its recipes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from xling.recipes import packaged

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_lists_and_runs_the_packaged_recipes(tmp_path):
    source = tmp_path / "source"  # build from a copy: building writes build/ and egg-info next to the sources
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("xling-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    # xling's dependencies (torch, numpy, ...) come from this environment; xling itself only from the wheel.
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(pip + ["--python", str(python), "install", "--no-deps", str(wheel)], check=True, capture_output=True)

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH, XLING_STUDIES, ./studies

    def xling(*args):
        return subprocess.run([venv / "bin" / "xling", *args], cwd=tmp_path, env=env, capture_output=True, text=True)

    where = subprocess.run([python, "-c", "import xling; print(xling.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(fresh_site)), where  # the wheel's copy, not the repository's
    listed = xling("study", "list")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert names == set(packaged("studies")) and "invalid" not in listed.stdout
    assert xling("demo", "--help").returncode == 0
    config = xling("config", "clone-90-10", "--languages.p", "0.5")
    assert config.returncode == 0 and "p: 0.5" in config.stdout, config.stderr
