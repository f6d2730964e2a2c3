"""The public API: `xling.Config`, `train`, `Run`, `Study`, `teff`, `corpus`; pinned, light to import, and what
the command line calls."""

from __future__ import annotations

import json
import math
import pydoc
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import xling
from conftest import make_documents, tiny_config_dict
from xling.cli import main
from xling.errors import XlingError

PUBLIC = ["Config", "Run", "Store", "Study", "TEffTable", "XlingError", "corpus", "teff", "train"]


# --------------------------------------------------------------------------- the surface


def test_the_public_surface_is_pinned_and_documented():
    assert xling.__all__ == PUBLIC
    assert [n for n in dir(xling) if not n.startswith("_")] == sorted(PUBLIC)  # not sys, types, TYPE_CHECKING
    text = pydoc.render_doc(xling, renderer=pydoc.plaintext)  # help(xling)
    for name in PUBLIC:
        obj = getattr(xling, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
        assert f"class {name}(" in text or f"    {name}(" in text, name
    for cls in (xling.Config, xling.Run, xling.Store, xling.Study, xling.TEffTable):
        for member, value in vars(cls).items():
            if not member.startswith("_") and (callable(value) or isinstance(value, property)):
                assert value.__doc__ and value.__doc__.strip(), f"{cls.__name__}.{member}"


def test_reading_a_run_loads_no_torch(tmp_path):
    from xling.config import RunConfig, dump_yaml

    (tmp_path / "config.yaml").write_text(dump_yaml(RunConfig()))
    (tmp_path / "run.json").write_text('{"status": "completed", "languages": ["EN1", "EN2"]}')
    (tmp_path / "eval.json").write_text('{"split": "test", "languages": {"EN1": {"ppl": 9.5}}}')
    code = (f"import sys, xling; r = xling.Run({str(tmp_path)!r}); "
            "assert (r.status, r.languages, r.evaluation()['EN1']['ppl'], r.config.model.seq_len) == "
            "('completed', ['EN1', 'EN2'], 9.5, 128); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_import_xling_is_light_and_train_stays_the_function():
    code = ("import sys, xling; assert 'torch' not in sys.modules and 'xling.api' not in sys.modules; "
            "xling.Config; assert 'torch' not in sys.modules; "
            "import xling.train.rundir; from xling.train import trainer; assert callable(xling.train); "
            "assert xling.train is xling.api.train and sys.modules['xling.train'].__name__ == 'xling.train'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --------------------------------------------------------------------------- Config and corpus


def test_config_from_a_recipe_a_file_a_mapping_with_overrides(tmp_path, tiny_corpus_dir):
    cfg = xling.Config("clone-90-10", {"train.steps": 7}, languages={"p": 0.3})
    assert (cfg.train.steps, cfg.languages.p, cfg.name) == (7, 0.3, "clone-90-10")
    assert cfg.languages.num_clones == 1  # a section's other keys stay
    path = cfg.save(tmp_path / "c.yaml")
    assert xling.Config(path) == cfg and xling.Config(str(path)).to_dict() == cfg.to_dict()
    assert xling.Config(tiny_config_dict(tiny_corpus_dir)).model.d_model == 32
    assert xling.Config({"train.seed": 4}).train.seed == 4  # dotted keys in a mapping are overrides
    assert cfg.replace({"train.lr": 0.01}).train.lr == 0.01 and cfg.train.lr != 0.01
    assert yaml.safe_load(str(cfg))["train"]["steps"] == 7
    assert "'train.steps': 7" in repr(cfg)
    assert xling.Config(xling.Config(cfg)) == cfg
    with pytest.raises(XlingError, match=r"did you mean 'train\.steps'"):
        xling.Config(None, {"train.stepz": 3})
    with pytest.raises(XlingError, match=r"languages\.p must be in"):
        xling.Config(languages={"p": 2})
    with pytest.raises(XlingError, match="unknown config section 'trian'"):
        xling.Config(trian={"steps": 1})
    with pytest.raises(XlingError, match=r"train\.steps given twice \(a section's 4 and the overrides' 3\)"):
        xling.Config("clone-90-10", {"train.steps": 3}, train={"steps": 4})  # which was meant? (the CLI asks too)
    with pytest.raises(XlingError, match=r"train\.seed given twice \(the source's 4 and the overrides' 5\)"):
        xling.Config({"train.seed": 4}, {"train.seed": 5})
    with pytest.raises(XlingError, match=r"overrides are dotted keys .* not 'languages': give a section's keys as "
                                         r"languages\.KEY, or the section as a keyword"):  # (it replaced the section)
        xling.Config("clone-90-10", {"languages": {"p": 0.3}, "languages.p": 0.5})
    assert xling.Config("clone-90-10", {"train.steps": 3}, train={"steps": 3}).train.steps == 3  # once, twice said
    with pytest.raises(XlingError, match="did you mean 'clone-90-10'"):
        xling.Config("clone-90-1")
    # the per-language keys are checked as training checks them, by Config and by validate() after a change
    with pytest.raises(XlingError, match="a real language has them"):
        xling.Config("clone-90-10", {"languages.kind": "real", "languages.transforms.FR": ["clone"]})
    many = xling.Config("clone-90-10", {"languages.kind": "real", "languages.corpora": ["web", "lsg"]})
    many.languages.mix = {"EN": 0.7, "FR": 0.2}
    with pytest.raises(XlingError, match=r"languages\.mix shares must sum to 1, got 0\.9"):
        many.validate()


def test_documents_in_memory_are_a_content_addressed_jsonl_corpus(tmp_path):
    docs = make_documents(40, seed=3)
    section = xling.corpus(docs, cache_dir=tmp_path)
    path = tmp_path / "documents" / section["paths"][0].rsplit("/", 1)[1]
    assert section["name"] == "jsonl" and path.is_file()
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == docs
    assert xling.corpus(iter(docs), cache_dir=tmp_path) == section  # an iterator: the same file
    assert xling.corpus(docs[:-1], cache_dir=tmp_path) != section
    assert not [p for p in (tmp_path / "documents").iterdir() if p.suffix != ".jsonl"]  # no temp files left
    cfg = xling.Config("clone-90-10", corpus=docs)  # Config writes them itself (to $XLING_CACHE)
    assert cfg.corpus.name == "jsonl" and cfg.corpus.paths[0].endswith(path.name)
    real = xling.Config("clone-90-10", languages={"kind": "real", "second": (d.upper() for d in docs)})
    assert real.languages.second.name == "jsonl"
    for bad, match in (("one string", "not one string"), ([1, 2], r"documents\[0\] is an int"), ([], "no documents")):
        with pytest.raises(XlingError, match=match):
            xling.corpus(bad, cache_dir=tmp_path)
    with pytest.raises(XlingError, match="valid and test together"):
        xling.corpus(docs, test=docs[:3], cache_dir=tmp_path)
    with pytest.raises(XlingError, match="the same documents for two of documents, valid and test"):
        xling.corpus(docs, valid=docs[:3], test=iter(docs[:3]), cache_dir=tmp_path)


def test_held_out_documents_given_to_corpus_are_the_valid_and_test_text():
    docs = make_documents(60, seed=5)
    section = xling.corpus(docs[:50], valid=docs[50:53], test=docs[53:])
    cfg = xling.Config(dict(tiny_config_dict("unused"), corpus=section))
    assert [cfg.documents(split)["L1"] for split in ("train", "valid", "test")] == [docs[:50], docs[50:53], docs[53:]]


def test_documents_are_each_languages_text_split_as_training_splits_it():
    docs = make_documents(60, seed=4)
    real = xling.Config(tiny_config_dict("unused", corpus=docs, languages={
        "kind": "real", "second": [d.upper() for d in docs], "vocab": "disjoint"}))
    splits = {split: real.documents(split) for split in ("train", "valid", "test")}
    for name, text in zip(real.language_names, (docs, [d.upper() for d in docs])):
        parts = [splits[split][name] for split in splits]
        assert sorted(d for part in parts for d in part) == sorted(text) and all(parts)  # each in one split
    clones = xling.Config(tiny_config_dict("unused", corpus=docs, languages={"num_clones": 2}))
    test = clones.documents()
    assert list(test) == ["L1", "L2", "L3"]  # a local text's language code is L
    assert test["L1"] == test["L3"] == splits["test"][real.language_names[0]]
    with pytest.raises(XlingError, match="split must be one of train, valid, test, got 'probe'"):
        clones.documents("probe")  # Luke and Acts are the Bible's; a local corpus has no probe split


# --------------------------------------------------------------------------- a user-built id table


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A run of three languages from an id table: EN, a clone sharing the byte pieces, a full clone."""
    base = tiny_config_dict("unused", train={"steps": 6})
    base["corpus"] = make_documents(100, seed=2, sentences=6)
    cfg = xling.Config(base)
    v = cfg.tokenizer.vocab_size
    cfg = cfg.with_id_table([lambda ids: ids, lambda ids: np.where(ids < 259, ids, ids + v), np.arange(v) + 2 * v],
                            names=["EN", "EN-b", "EN-c"])
    return xling.train(cfg, tmp_path_factory.mktemp("table") / "run", progress=False), v


def test_a_user_built_id_table_trains_evaluates_and_samples(table_run):
    import torch

    from xling.train.session import load_session

    run, v = table_run
    assert run.status == "completed" and run.languages == ["EN", "EN-b", "EN-c"]
    assert set(run.evaluation()) == {"EN", "EN-b", "EN-c"}
    setup = load_session(run.path, device="cpu").setup
    ids = torch.arange(v)
    assert torch.equal(setup.table[1], torch.where(ids < 259, ids, ids + v)) and setup.model_vocab == 3 * v
    assert run.info["model_vocab"] == 3 * v
    tokens = run.metrics()[-1]
    assert tokens["tokens/EN"] > tokens["tokens/EN-b"] > 0 and tokens["tokens/EN-c"] > 0
    assert run.sample("EN-b", prompt="The king", tokens=3).startswith("The king")
    table = Path(run.config.languages.table)
    assert table.suffix == ".npy" and table.parent.name == "id-tables"
    moved = table.rename(table.with_suffix(".gone"))  # the run keeps its own copy of its table
    try:
        assert set(run.evaluate(max_tokens=200)) == {"EN", "EN-b", "EN-c"}
    finally:
        moved.rename(table)
    brought = run.config.replace({"tokenizer.path": str(setup.tokenizers[0].path), "tokenizer.vocab_size": 4096})
    assert brought.with_id_table([np.arange(v), np.arange(v) + v]).languages.num_clones == 1  # V: the tokenizer's


def test_bad_id_tables_are_one_error(tmp_path):
    cfg = xling.Config("clone-90-10", tokenizer={"vocab_size": 300})
    ids = np.arange(300)
    for table, match in (([ids], "at least two"), ([ids, ids[:10]], "must each hold 300"),
                         (np.stack([ids, ids]).astype(float), "whole numbers"),
                         (np.stack([ids, ids - 1]), r"model ids in \[0, 600\)"),
                         (np.stack([ids, ids + 600]), r"model ids in \[0, 600\)"),
                         (np.zeros((2, 299), dtype=int), "has 299 columns but the tokenizer has 300")):
        with pytest.raises(XlingError, match=match):
            cfg.with_id_table(table)
    with pytest.raises(XlingError, match="frac_clone does not apply"):
        cfg.with_id_table([ids, ids + 300]).replace({"languages.frac_clone": 0.5})
    for clones in (1, 3):  # the config's languages against the table's rows: refused by Config, not only by training
        with pytest.raises(XlingError, match=f"languages.table has 3 rows but the run has {clones + 1} languages"):
            cfg.with_id_table([ids, ids + 300, ids + 600]).replace({"languages.num_clones": clones})
    from xling.data.languages import load_table

    path = tmp_path / "t.npy"
    np.save(path, np.stack([ids, ids + 300]))
    assert load_table(path, 2, 300)[1] == 600
    with pytest.raises(XlingError, match="has 2 rows but the run has 3"):
        load_table(path, 3, 300)
    with pytest.raises(XlingError, match="not found"):
        load_table(tmp_path / "missing.npy", 2, 300)
    saved = cfg.with_id_table([ids, ids + 300]).languages.table
    forged = tmp_path / "id-tables" / saved.rsplit("/", 1)[1]
    forged.parent.mkdir()
    np.save(forged, np.stack([ids, ids + 299]))  # another table under the first one's content key
    with pytest.raises(XlingError, match="no longer holds the table"):
        load_table(forged, 2, 300)


# --------------------------------------------------------------------------- Run and train


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    for evaluated in (tmp_path / "run").glob("eval*.json"):  # other tests may have evaluated the shared run
        evaluated.unlink()
    return xling.Run(tmp_path / "run")


def test_run_reads_evaluates_and_loads_its_model(run_copy, monkeypatch):
    import torch

    from xling.train.session import load_session

    run = run_copy
    assert run.exists and run.status == "completed" and run.languages == ["L1", "L2"]
    typo = xling.Run(run.path.parent / "rnu")
    with pytest.raises(XlingError, match="rnu does not exist"):  # as `xling status` says (a study's: pending)
        _ = typo.status
    typo.path.mkdir()  # a directory made for a run, nothing trained yet
    assert not typo.exists and typo.status == "pending"
    assert run.config.train.steps == 12 and run.info["steps"] == 12
    train = run.metrics()
    assert [r["step"] for r in train] == list(range(1, 13)) and {"loss", "lr", "tokens/L1"} <= set(train[0])
    assert run.metrics("valid")[-1]["step"] == 12 and "ppl/L2" in run.metrics("valid")[-1]
    with pytest.raises(XlingError, match="no test evaluation yet"):
        run.evaluation()
    with pytest.raises(XlingError, match="split must be one of train, valid, test, got 'tset'"):
        run.evaluation("tset")
    results = run.evaluate()
    assert run.evaluation() == results and set(results) == {"L1", "L2"} and run.eval_path().is_file()
    prefix = run.evaluate(max_tokens=400)  # another protocol: a file of its own, the run's evaluation untouched
    assert prefix != results and run.evaluation() == results
    assert json.loads((run.path / "eval_test_window32_last8_400.json").read_text())["languages"] == prefix
    model = run.model()
    assert isinstance(model, torch.nn.Module) and not model.training
    assert isinstance(run.sample("L2", prompt="The king", tokens=4, seed=1), str)
    import xling.model.gpt as gpt

    seen, real_generate = [], gpt.generate
    monkeypatch.setattr(gpt, "generate", lambda *a, **k: seen.append(a[-1]) or stops.append(k["stop"])
                        or real_generate(*a, **k))
    stops = []
    run.sample("L2", tokens=2)
    run.sample("L2", tokens=2, any_language=True)
    half = seen[0].numel() // 2  # a clone run: L2's ids are the upper half of the model's vocabulary (its pad
    assert seen[0].sum() == half - 1 and not seen[0][:half].any() and seen[1] is None  # is shared: never sampled)
    setup = load_session(run.path, device="cpu").setup  # the end of a document, in either language, ends the text
    assert stops == [{setup.eod(0), setup.eod(1)}] * 2 and setup.eod(0) != setup.eod(1)
    # a language's name in any case, as in config keys (languages.mix.l2)
    assert run.sample("l2", prompt="The king", tokens=4, seed=1) == run.sample("L2", prompt="The king", tokens=4, seed=1)
    with pytest.raises(XlingError, match="unknown language 'FR'"):
        run.sample("FR")
    with pytest.raises(XlingError, match="metrics split"):
        run.metrics("test")
    with pytest.raises(XlingError, match="split must be one of"):
        run.evaluate(split="bogus")
    for read in (lambda r: r.metrics(), lambda r: r.evaluation()):  # not a run: said so, not [] or "not yet"
        with pytest.raises(XlingError, match="nope does not exist"):
            read(xling.Run(run.path.parent / "nope"))
        with pytest.raises(XlingError, match="is not a run directory"):
            read(xling.Run(run.path / "tokenizers"))  # a folder, but no run
    aligned = run.align(sequences=8, grad_sequences=0, figures=False)
    assert len(aligned["hidden"]["layers"]) == 1 and run.align(reuse=True) == aligned
    assert run.align(["l1", "l2"], reuse=True) == aligned  # the same pair, in any case
    with pytest.raises(XlingError, match="unknown language 'L7'"):  # another pair is not read from the stored one
        run.align(["L1", "L7"], reuse=True)


def test_metrics_as_a_data_frame(run_copy):
    pandas = pytest.importorskip("pandas")
    frame = run_copy.metrics(frame=True)
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 12 and "tokens/L2" in frame.columns


def test_train_holds_the_run_lock_while_it_evaluates(tiny_corpus_dir, tmp_path, monkeypatch):
    """Its test evaluation is still the run at work: `xling status` says running, and no second process starts on it
    (before, the lock was let go for the evaluation: ~6 s of "completed (no test evaluation)" at cpu-xs)."""
    from xling.api.runs import Run
    from xling.train.lock import is_locked

    seen, real = [], Run.evaluate
    monkeypatch.setattr(Run, "evaluate", lambda self, *a, **k: seen.append(is_locked(self.path)) or real(self, *a, **k))
    xling.train(tiny_config_dict(tiny_corpus_dir), tmp_path / "run", progress=False)
    assert seen == [True] and not is_locked(tmp_path / "run")


def test_train_holds_the_run_lock_while_it_prepares_data_and_leaves_nothing_when_that_fails(tiny_corpus_dir, tmp_path,
                                                                                           monkeypatch):
    """Data preparation (minutes at paper scale) is the run at work too: `xling status` says running and a second
    process is refused at once (before, the lock was taken after it). A preparation that fails (bad data, Ctrl-C)
    leaves no run directory behind."""
    from xling.train import trainer
    from xling.train.lock import is_locked

    seen, real = [], trainer.prepare_languages
    monkeypatch.setattr(trainer, "prepare_languages", lambda *a: seen.append(is_locked(tmp_path / "run")) or real(*a))
    xling.train(tiny_config_dict(tiny_corpus_dir), tmp_path / "run", progress=False, evaluate=False)
    assert seen == [True]

    def broken(*a):
        raise XlingError("a document is not UTF-8")

    monkeypatch.setattr(trainer, "prepare_languages", broken)
    with pytest.raises(XlingError, match="not UTF-8"):
        xling.train(tiny_config_dict(tiny_corpus_dir), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_train_refuses_an_existing_run_and_resumes_a_finished_one(run_copy, tiny_corpus_dir):
    cfg = xling.Config(tiny_config_dict(tiny_corpus_dir))
    with pytest.raises(XlingError, match="already exists"):
        xling.train(cfg, run_copy.path, progress=False)
    again = xling.train(cfg, run_copy.path, resume=True, progress=False)
    assert again == run_copy and again.status == "completed" and set(again.evaluation()) == {"L1", "L2"}
    with pytest.raises(XlingError, match="config differs"):
        xling.train(cfg.replace({"train.lr": 0.01}), run_copy.path, resume=True, progress=False)
    a_file = run_copy.path.parent / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(XlingError, match="a-file is a file, not a directory"):
        xling.train(cfg, a_file, progress=False)


# --------------------------------------------------------------------------- teff


def _ladder():
    return [{"language": "EN", "fraction": f, "ppl": 40 * f ** -0.3 + 10} for f in (0.1, 0.25, 0.5, 1.0)]


def test_teff_from_rows_csv_files_and_frames(tmp_path):
    runs = [{"run": "a", "language": "EN", "fraction": 0.5, "ppl": 40 * 0.5 ** -0.3 + 10}]
    table = xling.teff(_ladder(), runs, bootstrap=0)
    assert isinstance(table, xling.TEffTable) and len(table) == 1 and abs(table[0]["teff"] - 1) < 0.05
    assert ("loss", "EN") in table.laws
    lower = xling.teff(_ladder(), [dict(runs[0], language="en")], bootstrap=0)  # names match in any case
    assert lower[0]["language"] == "EN" and lower[0]["teff"] == table[0]["teff"]
    both = xling.teff(_ladder(), runs, form="both", bootstrap=0)
    assert [r["form"] for r in both] == ["loss", "paper"]
    path = table.write_csv(tmp_path / "t.csv")
    mono_csv = tmp_path / "mono.csv"
    mono_csv.write_text("language,fraction,ppl\n" + "".join(f"EN,{r['fraction']},{r['ppl']}\n" for r in _ladder()))
    assert xling.teff(mono_csv, runs, bootstrap=0)[0]["teff"] == pytest.approx(table[0]["teff"])
    assert path.read_text().startswith("run,language,fraction,ppl,mlpe") and b"\r" not in path.read_bytes()
    for mono, match in (([{"language": "EN", "fraction": 0.1}], "mono row 1: empty 'ppl'"),
                        ([{"language": "EN", "fraction": -1, "ppl": 3}], "fraction must be a positive"),
                        ([], "mono: no rows"), ([3], "mono row 1 is an int")):
        with pytest.raises(XlingError, match=match):
            xling.teff(mono, runs)
    with pytest.raises(XlingError, match="unknown law form"):
        xling.teff(_ladder(), runs, form="cubic")
    pandas = pytest.importorskip("pandas")
    assert xling.teff(pandas.DataFrame(_ladder()), pandas.DataFrame(runs), bootstrap=0)[0]["run"] == "a"
    assert list(table.frame().columns)[:4] == ["run", "language", "fraction", "ppl"]


# --------------------------------------------------------------------------- Study


def tiny_study(corpus_dir, name="api-tiny") -> dict:
    base = tiny_config_dict(corpus_dir, train={"steps": 0, "checkpoint_every": 50, "log_every": 5},
                            eval={"max_tokens": 1500})
    return {"name": name, "paper": "Table 1", "base": base, "grid": {"train.seed": [0, 1]},
            "groups": {"ladder": {"set": {"languages.p": 0.0},
                                  "grid": {"train.data_fraction": [0.1, 0.2, 0.3, 0.4], "train.seed": [0]}},
                       "mix": {"set": {"train.data_fraction": 0.4}, "grid": {"languages.p": [0.5, 0.1]}}},
            "one_x": 0.4}


def test_study_runs_reports_and_gives_its_results_as_rows(tiny_corpus_dir, tmp_path):
    lines = []
    study = xling.Study(tiny_study(tiny_corpus_dir), root=tmp_path / "runs")
    assert study.name == "api-tiny" and len(study.runs()) == 8 and all(r.status == "pending" for r in study.runs())
    counts = study.run(log=lines.append)
    assert counts["completed"] == counts["total"] == 8 and lines
    assert {r["state"] for r in study.status()} == {"completed"}
    rows = study.results()
    mix = [r for r in rows if r["group"] == "mix"]
    assert len(mix) == 8 and {r["language"] for r in mix} == {"L1", "L2"}
    assert all(r["teff"] is not None and r["teff"] > 0 for r in mix) and {"languages.p", "train.seed"} <= set(mix[0])
    assert len({tuple(r) for r in rows}) == 1  # one set of columns in every group's rows (a group's grid: None else)
    assert {r["train.data_fraction"] for r in mix} == {0.4} and {r["languages.p"] for r in mix} == {0.5, 0.1}
    assert {r["languages.p"] for r in rows if r["group"] == "ladder"} == {0.0}  # set, not varied: still its value
    ladder_run = next(r for r in study.runs() if "ladder" in r.path.name)  # evaluated again: as the study scored it
    assert set(ladder_run.evaluate()) == set(ladder_run.evaluation()) == {"L1"}
    settings = study.results(level="setting")
    minority = [r for r in settings if r["role"] == "L2" and not r["monolingual"]]
    assert len(minority) == 2 and all(r["seeds"] == 2 and r["teff_lo"] <= r["teff"] <= r["teff_hi"] for r in minority)
    # a setting's grid values are columns (to filter and plot by), the seed is not; mlpe is its law's perplexity
    assert {r["languages.p"] for r in minority} == {0.5, 0.1} and all("train.seed" not in r for r in settings)
    assert all(r["mlpe"] > 1 for r in minority) and len({tuple(r) for r in settings}) == 1
    ladder = [r for r in settings if r["monolingual"]]  # one seed each: no interval, not a zero-width one
    assert ladder and all(r["seeds"] == 1 and r["ppl_lo"] is None is r["ppl_hi"] for r in ladder)
    # each law form (and the ladder) at both levels under one name; the paper's own numbers apart
    for r in minority:
        assert {"teff_paper", "teff_loss", "teff_ladder", "teff_published", "ppl_published"} <= set(r)
        runs = [m["teff_paper"] for m in mix if m["role"] == "L2" and m["setting"] == r["setting"]]
        assert r["teff_paper"] == pytest.approx(sum(runs) / len(runs))
    assert study.report(tmp_path / "report").name == "report.md" and (tmp_path / "report" / "report.html").is_file()
    with pytest.raises(XlingError, match="its runs are not aligned yet: run this command without --no-compute"):
        study.align_report(tmp_path / "alignment", compute=False)
    with pytest.raises(XlingError, match="level must be"):
        study.results(level="seed")
    # the results store, read across studies: the same evaluations, grid values and sampled shares
    store = xling.Store(tmp_path / "runs")
    evaluations = store.evaluations("api-tiny")
    with pytest.raises(XlingError, match="split must be one of train, valid, test, got 'dev'"):
        store.evaluations(split="dev")  # (it gave no rows, as if nothing were evaluated)
    assert len(evaluations) == len(rows) and len({tuple(e) for e in evaluations}) == 1
    stored = {(e["run"], e["language"]): e for e in evaluations}
    for r in rows:
        e = stored[(r["run"], r["language"])]
        assert e["ppl"] == pytest.approx(r["ppl"]) and e["fraction_sampled"] == pytest.approx(r["fraction_sampled"])
        assert (e["languages.p"], e["train.seed"], e["group"]) == (r["languages.p"], r["train.seed"], r["group"])
    runs = store.runs()
    assert len(runs) == 8 and {r["status"] for r in runs} == {"completed"} and store.runs("another") == []
    pytest.importorskip("pandas")
    # a frame of no rows has the columns a frame of rows has, but the grid's (it had none at all)
    grid = ["train.data_fraction", "train.seed", "languages.p"]
    for full, empty in ((store.evaluations(frame=True), store.evaluations(split="valid", frame=True)),
                        (store.runs(frame=True), store.runs("another", frame=True))):
        assert empty.shape[0] == 0 and list(empty.columns) == [c for c in full.columns if c not in grid]
    assert all(r["config"]["train"]["seed"] == r["train.seed"] and r["final_loss"] > 0 for r in runs)
    assert store.query("SELECT COUNT(*) AS n FROM runs WHERE study = ?", ("api-tiny",)) == [{"n": 8}]
    for writes in ("DELETE FROM runs", f"VACUUM INTO '{tmp_path / 'copy.db'}'", f"ATTACH '{tmp_path / 'x.db'}' AS x",
                   "CREATE TEMP TABLE t (a)"):
        with pytest.raises(XlingError, match=r"only reads"):  # neither the store nor any other file
            store.query(writes)
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "x.db").exists()
    with pytest.raises(XlingError, match=r"no results store at .*xling store rebuild"):
        xling.Store(tmp_path / "nowhere")


# --------------------------------------------------------------------------- the CLI calls the API


def test_the_command_line_is_a_layer_over_the_api(monkeypatch, capsys, tmp_path):
    from xling.api import runs, studies

    calls = []
    monkeypatch.setattr(runs.Run, "sample", lambda self, language, *a, **k: calls.append(("sample", a)) or "hello")
    monkeypatch.setattr(runs.Run, "export_hf", lambda self, out, language: calls.append(("export", language)) or
                        {"out": out, "vocab_size": 8, "language": language, "files": ["config.json"]})
    monkeypatch.setattr(studies.Study, "run", lambda self, *a, **k: calls.append(("study run", a)) or
                        {"total": 1, "completed": 1, "failed": 0})
    monkeypatch.setattr(studies.Study, "report", lambda self, out, screenshot, task: calls.append(("report", out)) or
                        tmp_path / "report.md")
    monkeypatch.setattr(studies.Study, "align_report", lambda self, out, **k: calls.append(("align-report", k)) or
                        tmp_path / "alignment.md")
    assert main(["sample", str(tmp_path), "--language", "L1", "--tokens", "3"]) == 0
    assert capsys.readouterr().out == "[L1] hello\n"
    assert main(["export", str(tmp_path), str(tmp_path / "hf"), "--language", "L2"]) == 0
    assert main(["study", "run", "headline-cpu", "--workers", "3"]) == 0
    assert main(["report", "headline-cpu", "--out", str(tmp_path)]) == 0
    assert main(["align-report", "headline-cpu", "--grad-precision", "fp16", "--no-compute"]) == 0
    assert [c[0] for c in calls] == ["sample", "export", "study run", "report", "align-report"]
    assert calls[2][1] == (3,) and calls[4][1] == {"compute": False, "task": "bible-parts", "workers": "auto",
                                                   "grad_sequences": None, "grad_precision": "fp16",
                                                   "pairs": "first"}


def test_mistaken_arguments_are_one_xling_error(run_copy, tiny_corpus_dir, tmp_path):
    run = xling.Run(run_copy)
    for call, match in ((lambda: run.align("EN1"), "pair names two languages"),
                        (lambda: run.align(["L1", "L2", "L1"]), "pair names two languages"),
                        (lambda: run.align(word2vec={"bogus": 1}), "word2vec knobs are"),
                        (lambda: run.evaluate(max_tokens=-5), "give 0 \\(the whole split\\)"),
                        (lambda: run.eval_path("probe"), "split")):
        with pytest.raises(XlingError, match=match):
            call()
    study = xling.Study(tiny_study(tiny_corpus_dir, name="api-mistakes"), root=tmp_path / "runs")
    as_config = dict(tiny_study(tiny_corpus_dir, name="api-mistakes"))  # a Config as the base: the same runs
    as_config["base"] = xling.Config(as_config["base"])
    assert xling.Study(as_config, root=tmp_path / "runs").runs() == study.runs()
    named = {"name": "named", "base": "clone-90-10", "grid": {"languages.p": [0.5]}}  # a recipe's name as the base
    assert xling.Study(named).runs() == xling.Study({**named, "base": xling.Config("clone-90-10")}).runs()
    with pytest.raises(XlingError, match="must be a whole number >= 1 or 'auto', got 'many'"):
        study.run(workers="many")
    lines = []
    with pytest.raises(XlingError, match="unknown logger 'nope'"):
        study.run(loggers=["nope"], log=lines.append)
    assert lines == []  # refused before the study says what it will run
    wrong_type, as_in_yaml = xling.Config("clone-90-10"), xling.Config("clone-90-10")
    wrong_type.train.lr = "fast"  # set in place with another type
    as_in_yaml.languages.names, as_in_yaml.train.lr = ("A", "B"), 1  # read as a file's values would be
    assert as_in_yaml.validate().languages.names == ["A", "B"] and isinstance(as_in_yaml.train.lr, float)
    for call, match in ((lambda: xling.Config("clone-90-10", "train.steps"), "overrides are a mapping of dotted keys"),
                        (lambda: xling.Run(None), "a run is a directory's path"),
                        (lambda: xling.teff(5, []), "mono rows must be mappings"),
                        (lambda: setattr(xling.Config(), "name", "a/b"), "'a/b' is not a usable name"),
                        (wrong_type.validate, "train.lr must be a finite number, got 'fast'")):
        with pytest.raises(XlingError, match=match):
            call()
    from xling.study.store import Store

    with pytest.raises(XlingError, match=r"cannot use the results store /proc/x\.db"):
        Store("/proc/x.db")  # not a damaged store to set aside: one that cannot be opened


def test_a_script_that_runs_a_study_at_its_top_level_gets_one_line_from_each_worker(tiny_corpus_dir, tmp_path):
    """Spawned workers import the script again: without `if __name__ == "__main__":` they used to run the study
    themselves (its first lines again) and fail in multiprocessing's traceback; now each says what to change."""
    script = tmp_path / "unguarded.py"
    study = tiny_study(tiny_corpus_dir, name="unguarded")
    script.write_text(f"import xling\nxling.Study({study!r}, root={str(tmp_path / 'runs')!r}).run(workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "worker process died" in done.stderr  # (a data preparation's, or a run's)
    assert 'put its xling calls under `if __name__ == "__main__":`' in done.stderr
    assert "RuntimeError" not in done.stderr and done.stdout.count("study unguarded:") == 1


def test_pooled_clones_and_transformed_languages_in_results(tiny_corpus_dir, tmp_path):
    base = tiny_config_dict(tiny_corpus_dir, train={"steps": 0, "checkpoint_every": 50, "log_every": 5},
                            eval={"max_tokens": 1500})
    study = xling.Study({"name": "api-pooled", "base": base, "one_x": 0.4, "groups": {
        "ladder": {"set": {"languages.p": 0.0}, "grid": {"train.data_fraction": [0.1, 0.2, 0.4]}},
        "three": {"set": {"train.data_fraction": 0.4, "languages.num_clones": 2, "languages.p": 0.4}},
        "inv": {"set": {"train.data_fraction": 0.4, "languages.p": 0.5, "languages.transforms": {"L2": ["clone", "inverted"]}}}}},
        root=tmp_path / "runs")
    assert study.run(log=None)["completed"] == 5
    rows = study.results()
    assert len({tuple(r) for r in rows}) == 1  # the transformed language's row has every column too
    clones = {r["language"]: r["ppl"] for r in rows if r["group"] == "three" and r["role"] == "L2"}
    pooled = next(r for r in study.results(level="setting") if r["group"] == "three" and r["role"] == "L2")
    assert set(clones) == {"L2", "L3"} and pooled["language"] == "L2–L3"
    assert pooled["ppl"] == pytest.approx(math.sqrt(clones["L2"] * clones["L3"]))  # the geometric mean
    inverted = next(r for r in rows if r["group"] == "inv" and r["language"] == "L2")
    assert inverted["teff"] is None and "ladder" in inverted["warnings"]  # says why it has no TEff
    assert "no monolingual ladder of L1's text in L2's word order (inverted), trained alone" in inverted["warnings"]


def test_the_evaluation_window_follows_the_context_through_the_api(tiny_corpus_dir, tmp_path):
    from xling.config import to_dict

    shorter = xling.Config("clone-90-10").replace({"model.seq_len": 64})
    assert (to_dict(shorter._cfg)["eval"]["window"], to_dict(shorter._cfg)["eval"]["last_n"]) == (64, 16)
    assert "window: 0" in shorter.to_yaml()  # as written: it follows model.seq_len wherever the config goes
    study = xling.Study({"name": "windows", "base": xling.Config("clone-90-10"), "grid": {"model.seq_len": [128, 256]}},
                        root=tmp_path / "runs")
    assert [spec.config["eval"]["window"] for spec in study._study.runs] == [128, 256]
    cfg = xling.Config(tiny_config_dict(tiny_corpus_dir, train={"steps": 4}, eval={"window": 0, "last_n": 0}))
    run = xling.train(cfg, tmp_path / "run", progress=False)  # trained and scored in windows of its 32 tokens
    assert (run.config.eval.window, run.config.eval.last_n) == (32, 8)  # config.yaml records them resolved
    assert (json.loads(run.eval_path().read_text())["window"], json.loads(run.eval_path().read_text())["last_n"]) == (32, 8)


@pytest.mark.parametrize("call, message", [
    (lambda r: r.sample("L2", temperature=float("nan")), "temperature must be between 0 and 100, got nan"),
    (lambda r: r.sample("L2", tokens=2.5), "tokens must be a whole number, got 2.5"),
    (lambda r: r.sample("L2", seed=2**70), "seed must be between 0 and 4294967295"),
    (lambda r: r.sample("L2", prompt=5), "prompt must be text, got 5"),
    (lambda r: r.sample("L2", device=None), "device must be a name"),
    (lambda r: r.transfer(lr=float("nan")), "lr must be between"),
    (lambda r: r.transfer(task=5), "task must be text or a path, got 5"),
    (lambda r: r.export_hf(5), "out must be text or a path, got 5"),
    (lambda r: r.model(device=5), "device must be a name"),
    (lambda r: r.evaluate(window=64.0), "window must be a whole number or None, got 64.0"),
    (lambda r: r.evaluate(max_tokens="100"), "max_tokens must be a whole number or None, got '100'"),
    (lambda r: r.align(sequences="10"), "sequences must be a whole number, got '10'"),
    (lambda r: r.align_over_training(batch_size=0), "batch_size must be between 1 and 65536, got 0"),
    (lambda r: r.align(word2vec="yes"), "word2vec must be True or False or a mapping, got 'yes'"),
    (lambda r: r.align(5), "pair names two languages, e.g. ('EN1', 'EN2'); got 5"),
    (lambda r: r.align(("L1", None)), "pair names two languages, e.g. ('EN1', 'EN2'); got ('L1', None)"),
    (lambda r: r.align({"L1", "L2"}), "pair names two languages"),
    (lambda r: r.align(grad_precision="bf16"), "the gradient precision (--grad-precision, grad_precision) is one of"),
    (lambda r: r.metrics(frame="yes"), "frame must be True or False, got 'yes'"),
    (lambda r: xling.train(r.config, r.path, resume="no"), "resume must be True or False, got 'no'"),
    (lambda r: xling.train(r.config, r.path, evaluate="no"), "evaluate must be True or False, got 'no'"),
    (lambda r: xling.Run(r.path / "typo").info, "typo does not exist: pass the directory `xling train` wrote"),
])
def test_run_methods_refuse_values_of_another_type_or_range_in_one_xling_error(tiny_run, call, message):
    with pytest.raises(xling.XlingError, match=re.escape(message)):
        call(xling.Run(tiny_run))


@pytest.mark.parametrize("call, message", [
    (lambda: xling.teff([], [], bootstrap="10"), "bootstrap must be a whole number, got '10'"),
    (lambda: xling.teff([], [], bootstrap=10.5), "bootstrap must be a whole number, got 10.5"),
    (lambda: xling.teff([], [], seed="x"), "seed must be a whole number, got 'x'"),
    (lambda: xling.Study(5), "study must be text or a path or a mapping, got 5"),
    (lambda: xling.Study("headline-cpu", root=5), "root must be text or a path or None, got 5"),
    (lambda: xling.corpus({"a": 1}), "corpus() takes documents as a list or an iterator of strings, not a dict"),
    (lambda: xling.corpus(["a"], cache_dir=5), "cache_dir must be text or a path or None, got 5"),
    (lambda: xling.Study("headline-cpu").run(gpus=["a"]), "gpus[0] must be a whole number, got 'a'"),
    (lambda: xling.Study("headline-cpu").run(log="x"), "log must be a function told each progress line"),
    (lambda: xling.Study("headline-cpu").run(reuse="no"), "reuse must be True or False, got 'no'"),
    (lambda: xling.Study("headline-cpu").align_report(grad_precision="bf16"),
     "the gradient precision (--grad-precision, grad_precision) is one of auto, fp32, fp16; got 'bf16'"),
    (lambda: xling.Study("headline-cpu").align_report(pairs="every"), "pairs is 'first'"),
    (lambda: xling.Study("headline-cpu").align_report(grad_sequences=-1),
     "grad_sequences must be between 0 and 10000000, got -1"),
    (lambda: xling.Study("headline-cpu").align_report(workers=0), "workers must be between 1 and 4096, got 0"),
    (lambda: xling.teff([{"language": "EN1", "fraction": 1.0, "ppl": 50}],
                        [{"run": "r", "language": "EN1", "fraction": 0.1, "ppl": None}]),
     "runs row 1: empty 'ppl'; fill in every required column"),
    (lambda: xling.Config("clone-90-10", tokenizer={"vocab_size": 300}).with_id_table([range(300)] * 2, names="AB"),
     "names must be a list of names, one per row of the table"),
    (lambda: xling.Config("clone-90-10", {"languages.kind": "real"}).with_id_table([range(300)] * 2),
     "with_id_table makes every language from the base corpus"),
])
def test_api_functions_refuse_values_of_another_type_in_one_xling_error(call, message):
    with pytest.raises(xling.XlingError, match=re.escape(message)):
        call()


def test_numpy_booleans_are_booleans_in_a_config():
    import numpy as np

    assert xling.Config("clone-90-10", {"train.compile": np.True_})._cfg.train.compile is True


def test_study_status_names_the_twin_a_study_run_would_copy(tiny_corpus_dir, tmp_path):
    """A run another study under the same root completed with this config is copied, not trained: status says so
    (it showed 'pending' like any other)."""
    from xling.cli.tables import status_table

    base = tiny_config_dict(tiny_corpus_dir, train={"steps": 4, "checkpoint_every": 50, "log_every": 2},
                            eval={"max_tokens": 1500})
    first = xling.Study({"name": "first", "base": base}, root=tmp_path)
    assert first.status()[0]["twin"] is None  # (nothing complete under the root yet)
    first.run(log=None)
    second = xling.Study({"name": "second", "base": base}, root=tmp_path)
    (row,) = second.status()
    assert row["state"] == "pending" and row["twin"] == f"first/{row['id']}"
    assert f"(complete as first/{row['id']}: a study run copies it)" in status_table(second, [row])
    assert first.status()[0]["twin"] is None  # a completed run has none


def test_a_run_in_training_without_a_checkpoint_says_so(run_copy):
    """eval, sample and align of a run another process trains, before its first checkpoint: not "train it first"
    (a --resume would be refused while it trains)."""
    from xling.train.lock import training_lock

    shutil.rmtree(run_copy.path / "checkpoints")
    with pytest.raises(xling.XlingError, match=r"has no usable checkpoint yet: train it first"):
        run_copy.evaluate()
    with training_lock(run_copy.path), pytest.raises(xling.XlingError, match=r"is training now and has no checkpoint "
                                                                             r"yet: wait for its first one"):
        run_copy.evaluate()


def test_a_run_of_own_text_in_folders_named_like_languages_is_aligned_from_anywhere(tmp_path, monkeypatch):
    """Language names are read from the run's config as evaluation reads it: relative paths from where it trained
    (folders `en` and `fr` read from elsewhere would be taken for Bible codes)."""
    from conftest import make_documents, tiny_config_dict
    from xling.analysis.alignment import stored_pair

    project = tmp_path / "project"
    for name, docs in (("en", make_documents(60, seed=1)), ("fr", [d.upper() for d in make_documents(60, seed=1)])):
        (project / name).mkdir(parents=True)
        (project / name / "text.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    data = tiny_config_dict("unused", train={"steps": 2, "checkpoint_every": 2})
    data["corpus"] = {"name": "text", "doc_per_line": True}
    data["languages"] = {"kind": "real", "corpora": ["en", "fr"]}
    monkeypatch.chdir(project)
    run = xling.train(xling.Config(data), tmp_path / "run", evaluate=False)
    monkeypatch.chdir(tmp_path)  # elsewhere: `en` and `fr` do not exist here
    path, stored = stored_pair(run.path, None)
    assert path == run.path / "alignment" / "alignment.json" and stored == {}
