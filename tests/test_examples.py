"""The scripts in examples/ run (here on tiny settings: a small corpus held in memory, a tiny model), and the API
reference (docs/build.py) builds from the docstrings without a broken reference."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import xling
from conftest import make_documents, tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs nothing: the scripts start under __main__
    return module


@pytest.fixture(scope="module")
def tiny_base() -> dict:
    base = tiny_config_dict("unused", train={"steps": 0, "checkpoint_every": 50, "log_every": 10})
    base["corpus"] = make_documents(100, seed=1, sentences=6)  # documents in memory (xling.corpus)
    return base


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_documented_script_with_a_main(path):
    module = load(path)
    assert module.__doc__ and f"python examples/{path.name}" in module.__doc__
    assert callable(module.main) and 'if __name__ == "__main__":' in path.read_text()


def test_the_headline_in_20_lines(tiny_base, tmp_path, capsys):
    module = load(ROOT / "examples" / "headline.py")
    body = [line for line in inspect.getsource(module.main).splitlines()[1:] if line.strip()
            and not line.strip().startswith("#")]
    assert len(body) <= 20
    table = module.main(tiny_base, tmp_path / "runs", fractions=(0.25, 0.5, 0.75, 1.0), bootstrap=10)
    assert [r["run"] for r in table] == ["L1 at 50%", "L2 at 50%", "L1 at 90%", "L2 at 10%"]
    assert all(r["teff"] > 0 for r in table) and "TEff" in capsys.readouterr().out
    again = module.main(tiny_base, tmp_path / "runs", fractions=(0.25, 0.5, 0.75, 1.0), bootstrap=0)  # runs reused
    assert [r["ppl"] for r in again] == [r["ppl"] for r in table]


def test_a_custom_mixture_with_a_custom_transform(tiny_base, tmp_path, capsys):
    settings = {key: value for key, value in tiny_base.items() if key != "corpus"}
    settings["train"] = {**settings["train"], "steps": 20}
    settings["languages"] = {k: v for k, v in settings["languages"].items() if k != "p"}  # the example's schedule sets it
    run = load(ROOT / "examples" / "custom_mixture.py").main(tiny_base["corpus"], settings, tmp_path / "run", probes=8)
    assert run.languages == ["EN", "EN-b", "EN-c"] and run.config.languages.schedule == "0.1_0.5"
    out = capsys.readouterr().out
    assert "EN-c  test perplexity" in out and "EN ~ EN-b: mean hidden-state cosine" in out


def test_a_study_as_a_table_and_a_figure(tiny_base, tmp_path, capsys):
    study = {"name": "example-tiny", "base": {**tiny_base, "eval": {**tiny_base["eval"], "max_tokens": 1500}},
             "groups": {"ladder": {"set": {"languages.p": 0.0}, "grid": {"train.data_fraction": [0.25, 0.5, 1.0]}},
                        "mix": {"grid": {"languages.p": [0.5, 0.1]}}}}
    rows = load(ROOT / "examples" / "study_table.py").main(study, tmp_path / "runs", tmp_path / "teff.png", workers=1)
    assert (tmp_path / "teff.png").stat().st_size > 1000
    minority = [r for r in rows if r["role"] == "L2" and not r["monolingual"]]
    assert sorted(r["fraction"] for r in minority) == pytest.approx([0.1, 0.5])
    assert "mix: p=0.1" in capsys.readouterr().out


def test_the_api_reference_builds(tmp_path):
    pytest.importorskip("pdoc", reason="the API reference needs pdoc: pip install pdoc")
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "site" / "xling.html").read_text(encoding="utf-8")
    assert all(f'<section id="{name}">' in page for name in xling.__all__)
    assert all((tmp_path / "site" / f"{path.stem}.html").is_file() for path in EXAMPLES)


def test_the_reference_check_finds_broken_references():
    build = load(ROOT / "docs" / "build.py")
    text = "See `Run.evaluate`, `xling.Config.replace`, `teff()`, `Run.evalute`, `xling.nothing`, `len`, ``Run.no``."
    assert build.broken_references(xling, [("here", text)]) == ["here: broken reference `Run.evalute`",
                                                                "here: broken reference `xling.nothing`"]


def test_the_lm_eval_task_holds_each_passage_without_its_last_word(tmp_path, capsys):
    import json

    import yaml

    passages = ["one two three four five six seven eight.", "too short here.", "a b c d e f g h i 42.",
                "The king saw the house and the gate of the city, and wept at night!",
                "Il dit alors à ses disciples : venez voir ceci ! »"]  # detached punctuation is not the last word
    (tmp_path / "held-out.txt").write_text("\n".join(passages), encoding="utf-8")
    task = load(ROOT / "examples" / "lm_eval_task.py").main(tmp_path / "tasks", text=tmp_path / "held-out.txt")
    spec = yaml.safe_load(task.read_text(encoding="utf-8"))
    assert spec["task"] == "xling_lastword" and spec["output_type"] == "loglikelihood"
    data = Path(spec["dataset_kwargs"]["data_files"]["test"])
    items = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    assert items == [{"context": "one two three four five six seven", "target": "eight"},
                     {"context": "The king saw the house and the gate of the city, and wept at", "target": "night"},
                     {"context": "Il dit alors à ses disciples : venez voir", "target": "ceci"}]
    assert "3 items" in capsys.readouterr().out
