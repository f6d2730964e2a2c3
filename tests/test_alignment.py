"""Alignment metrics on cases with known answers, and `xling align` end to end on the tiny run."""

import dataclasses
import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import requires_bible, tiny_config
from xling.analysis.alignment import align_run, gradient_similarity, hidden_similarity, max_weight_matching
from xling.analysis.embeddings import clone_pairs, embedding_similarity, frequency_bins, mean_pairwise_cosine
from xling.analysis.probes import Probes, pack_pairs
from xling.api import Run as xling_run
from xling.cli import main
from xling.cli.tables import alignment_table
from xling.data.languages import clone_table
from xling.errors import XlingError
from xling.model.gpt import GPT
from xling.model_dims import ModelDims
from xling.train.rundir import RunDir


def tiny_model(vocab=40, layers=2, seq_len=16):
    torch.manual_seed(0)
    return GPT(ModelDims(n_layers=layers, d_model=16, n_heads=2, d_mlp=32, seq_len=seq_len, vocab_size=vocab)).eval()


def nullcontext():
    import contextlib

    return contextlib.nullcontext()


# --------------------------------------------------------------------------- embeddings


def test_identical_clone_embeddings_have_similarity_one():
    v = 20
    table = clone_table(v, num_clones=1)
    emb = torch.randn(2 * v, 8)
    emb[v:] = emb[:v]  # every clone row equals its original
    counts = np.arange(v) * 3
    res = embedding_similarity({"input": emb}, table, 0, 1, counts)
    assert res["pairs"] == v - 1  # pad is never a clone pair
    assert res["input"]["clone_pairs"] == pytest.approx(1.0, abs=1e-6)
    assert res["input"]["all_pairs"] < 0.5
    assert all(b["input"] == pytest.approx(1.0, abs=1e-6) for b in res["by_frequency"])


def test_each_frequency_bin_has_its_own_all_pairs_baseline():
    v = 40
    table = clone_table(v, num_clones=1)
    emb = torch.randn(2 * v, 8)
    counts = np.where(np.arange(v) < 20, 1, 1000)  # half the tokens rare, half frequent
    rare = np.arange(1, 20)
    emb[rare] = emb[rare + v] = torch.ones(8) + 0.01 * torch.randn(19, 8)  # rare rows collapsed onto one direction
    bins = embedding_similarity({"output": emb}, table, 0, 1, counts)["by_frequency"]
    low, high = bins[0], bins[-1]
    assert low["n"] == 19 and low["output"] > 0.99 and low["output_all_pairs"] > 0.99  # high, but no alignment
    ids = np.arange(20, 40)  # the baseline is every pair of the bin's rows but its clone pairs
    rows = torch.nn.functional.normalize(emb[np.concatenate([ids, ids + v])], dim=-1)
    cosines = rows @ rows.T
    other = ~torch.eye(40, dtype=torch.bool) & ~torch.eye(40, dtype=torch.bool).roll(20, dims=1)
    assert high["output_all_pairs"] == pytest.approx(float(cosines[other].mean()), abs=1e-6)
    few = embedding_similarity({"output": emb}, table, 0, 1, np.where(np.arange(v) == 5, 7, counts))["by_frequency"]
    assert next(b for b in few if b["n"] == 1)["output_all_pairs"] is None  # one pair: no baseline


def test_tokens_never_seen_in_training_are_left_out_of_the_seen_only_means():
    """Beside the paper's mean over every clone pair: unseen rows move alike in both languages (here identical),
    which the paper's mean counts as alignment."""
    v = 30
    table = clone_table(v, num_clones=1)
    emb = torch.randn(2 * v, 8)
    unseen = np.arange(1, 11)
    emb[unseen + v] = emb[unseen]  # never trained: identical in both languages
    counts = np.where(np.isin(np.arange(v), unseen), 0, 5)
    res = embedding_similarity({"output": emb}, table, 0, 1, counts)
    assert res["pairs"] == v - 1 and res["pairs_seen"] == v - 11
    seen = np.arange(11, v)
    cos = torch.nn.functional.cosine_similarity(emb[seen], emb[seen + v], dim=-1)
    assert res["output"]["seen"]["clone_pairs"] == pytest.approx(float(cos.mean()), abs=1e-6)
    assert res["output"]["seen"]["all_pairs"] == pytest.approx(
        mean_pairwise_cosine(emb[np.concatenate([seen, seen + v])]), abs=1e-9)
    assert res["output"]["clone_pairs"] > res["output"]["seen"]["clone_pairs"] + 0.2  # the unseen pairs' cosine 1


def test_clone_pairs_skip_anchors_and_pad():
    table = clone_table(50, num_clones=1, frac_clone=0.5, seed=3)
    base, ids_a, ids_b = clone_pairs(table, 0, 1)
    assert len(base) == round(0.5 * 49) and 0 not in base
    assert (ids_b == ids_a + 50).all()


def test_mean_pairwise_cosine_matches_brute_force():
    x = torch.randn(7, 5)
    u = torch.nn.functional.normalize(x, dim=-1)
    sims = [float(u[i] @ u[j]) for i in range(7) for j in range(7) if i != j]
    assert mean_pairwise_cosine(x) == pytest.approx(np.mean(sims), abs=1e-6)


def test_frequency_bins_by_hand():
    # 4 bins per decade: edges 1, 1.78, 3.16, 5.62, 10, 17.8, 31.6, ...
    counts = np.array([0, 1, 2, 5, 10, 17, 18, 100, 0])
    values = {"v": np.array([9.0, 1, 2, 3, 4, 5, 6, 7, 11])}
    bins = frequency_bins(counts, values)
    got = [(round(b["lo"], 2), b["n"], b["v"]) for b in bins]
    assert got == [(0.0, 2, 10.0), (1.0, 1, 1.0), (1.78, 1, 2.0), (3.16, 1, 3.0), (10.0, 2, 4.5),
                   (17.78, 1, 6.0), (100.0, 1, 7.0)]
    assert bins[4]["hi"] == pytest.approx(10 ** 1.25)


# --------------------------------------------------------------------------- matching


def brute_force_weight(scores):
    """Best total weight over all full matchings (every row or every column matched)."""
    n_a, n_b = scores.shape
    if n_a > n_b:
        return brute_force_weight(scores.T)
    return max(sum(scores[i, j] for i, j in enumerate(perm)) for perm in itertools.permutations(range(n_b), n_a))


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (5, 5), (3, 5), (6, 4)])
def test_matching_equals_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        scores = rng.uniform(-0.5, 1.0, size=shape)
        rows, cols = max_weight_matching(scores)
        assert len(rows) == min(shape)
        assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)  # a matching
        assert scores[rows, cols].sum() == pytest.approx(brute_force_weight(scores))


def test_matching_agrees_with_the_authors_networkx_matching():
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(1)
    scores = rng.uniform(-0.3, 1.0, size=(8, 7))
    graph = nx.Graph()
    graph.add_weighted_edges_from((i, 8 + j, -scores[i, j]) for i in range(8) for j in range(7))
    matched = nx.algorithms.bipartite.minimum_weight_full_matching(graph, top_nodes=range(8))
    nx_weight = sum(scores[i, matched[i] - 8] for i in range(8) if i in matched)
    rows, cols = max_weight_matching(scores)
    assert scores[rows, cols].sum() == pytest.approx(nx_weight)


def test_pack_pairs_respects_length_on_both_sides():
    a = [[1, 2], [3], [4, 5, 6], [7] * 9, [8]]
    b = [[1], [2, 3, 4], [5], [6], [7, 8]]
    packed = pack_pairs(a, b, max_len=4)
    assert packed == [([1, 2, 3], [1, 2, 3, 4]), ([4, 5, 6, 8], [5, 7, 8])]  # [7]*9 cannot fit: dropped
    assert all(len(x) <= 4 and len(y) <= 4 for x, y in packed)
    # a short last pair ([9], [9]) is kept without a minimum and dropped under one (the authors keep >= 128 of 512)
    assert pack_pairs(a + [[9]], b + [[9]], max_len=4) == packed + [([9], [9])]
    assert pack_pairs(a + [[9]], b + [[9]], max_len=4, min_len=2) == packed


# --------------------------------------------------------------------------- hidden states and gradients


def test_gradient_cosine_of_identical_inputs_is_one():
    model = tiny_model()
    seqs = [torch.randint(1, 40, (17,)) for _ in range(3)]
    grad = gradient_similarity(model, Probes(seqs, [s.clone() for s in seqs], True, "test"), "cpu")
    values = [v for name, row in grad["tensors"].items() if name != "k.bias" for v in row]
    assert np.allclose(values, 1.0, atol=1e-5)
    assert grad["block_mean_without_key_bias"] == pytest.approx(1.0, abs=1e-5)
    # the key bias's gradient is zero in exact arithmetic: its cosine is 0 (all zero) or 1 (identical noise)
    assert all(abs(v) < 1e-5 or abs(v - 1) < 1e-5 for v in grad["tensors"]["k.bias"])
    assert grad["block_mean"] <= grad["block_mean_without_key_bias"] + 1e-9
    assert np.allclose(list(grad["other"].values()), 1.0, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # leaves the model clean


def test_gradients_under_fp16_autocast_as_the_authors_took_them_on_a_gpu():
    from xling.analysis.alignment import gradient_precision

    # "auto" is the authors' choice: their compare_representations.py autocasts to fp16 on CUDA only
    assert gradient_precision("auto", torch.device("cpu")) == "fp32"
    assert gradient_precision("auto", torch.device("cuda")) == "fp16"
    assert gradient_precision("fp16", torch.device("cpu")) == "fp16"
    model = tiny_model()
    torch.manual_seed(1)
    a = [torch.randint(1, 40, (17,)) for _ in range(4)]
    b = [torch.randint(1, 40, (17,)) for _ in range(4)]
    probes = Probes(a, b, True, "test")
    full, half = (gradient_similarity(model, probes, "cpu", precision=p) for p in ("fp32", "fp16"))
    assert (full["precision"], half["precision"]) == ("fp32", "fp16")
    # the same cosines up to fp16 rounding, except the key bias's, which is nothing but rounding
    for name, row in full["tensors"].items():
        if name != "k.bias":
            assert np.allclose(row, half["tensors"][name], atol=0.02), name
    assert full["tensors"] != half["tensors"]  # (autocast did change the arithmetic)
    assert all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())


@pytest.mark.parametrize("n, batch_size", [(1, 16), (2, 16), (7, 4), (40, 16), (41, 3)])
def test_shuffled_partners_are_half_the_probes_away_and_every_probe_is_computed_once(n, batch_size):
    from xling.analysis.alignment import _batches_with_partners

    batches = _batches_with_partners(n, batch_size)
    assert sorted(k for idx, _ in batches for k in idx) == list(range(n))
    assert all(len(idx) <= max(batch_size, 1) for idx, _ in batches)
    partners = [(idx[i], idx[i + m]) for idx, m in batches for i in range(m)]
    assert len(partners) == n // 2 and all(b - a == n // 2 for a, b in partners)


@pytest.mark.parametrize("positional", [True, False])
def test_hidden_cosine_of_identical_inputs_is_one(positional):
    model = tiny_model()
    seqs = [torch.randint(1, 40, (n,)) for n in (17, 12, 9, 17, 5)]  # ragged: padding must not matter
    res = hidden_similarity(model, Probes(seqs, [s.clone() for s in seqs], positional, "test"), "cpu",
                            nullcontext, batch_size=2)
    assert res["method"] == ("positional" if positional else "matching")
    assert np.allclose(res["layers"], 1.0, atol=1e-5)
    assert all(b < 0.999 for b in res["shuffled_baseline"])


# --------------------------------------------------------------------------- end to end


def test_align_run_writes_json_and_figures(tiny_run, capsys):
    code = main(["align", str(tiny_run), "--sequences", "8", "--grad-sequences", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "layer 1" in out and "gradient cosine" in out and "retrieval, chance (1/N)" in out
    folder = tiny_run / "alignment"
    res = json.loads((folder / "alignment.json").read_text())
    assert res["languages"] == ["L1", "L2"]  # local text: language code L
    assert len(res["hidden"]["layers"]) == 1 and res["hidden"]["sequences"] == 8
    assert res["gradient"]["sequences"] == 3 and res["gradient"]["precision"] == "fp32"  # auto on a CPU
    assert (f"  gradients: {tiny_run.name} fp32 over 3 sequences (the authors': fp16 autocast over 500 on a GPU; on "
            "a CPU their code takes fp32)") in out
    assert -1 <= res["embeddings"]["input"]["clone_pairs"] <= 1
    for name in ("hidden.png", "gradient.png", "embeddings.png"):
        assert (folder / name).stat().st_size > 1000


def test_align_with_word2vec_and_comparison(tiny_run, tmp_path):
    pytest.importorskip("gensim")
    res = align_run(tiny_run, sequences=4, grad_sequences=1, figures=False,
                    word2vec={"vector_size": 8, "epochs": 1, "workers": 1})
    w2v = res["word2vec"]
    assert w2v["settings"]["vector_size"] == 8 and w2v["pairs"] > 0
    assert -1 <= w2v["input"]["clone_pairs"] <= 1
    table = alignment_table({"a": res, "b": res})
    assert "w2v input clone-pairs" in table and "layer 1" in table
    n = w2v["settings"]["sentences"]
    assert table.endswith(f"whole training stream, a {n:,} sequences × 1 pass; b {n:,} sequences × 1 pass")
    assert "alignment is the clone-pairs value above all-pairs" in table
    # a rerun without the control or gradients keeps them (the same pair and checkpoint), and says so
    again = align_run(tiny_run, sequences=4, grad_sequences=0, figures=False)
    assert again["kept"] == ["word2vec", "gradient"]
    assert again["word2vec"] == w2v and again["gradient"] == res["gradient"]
    stored = json.loads((tiny_run / "alignment" / "alignment.json").read_text())
    assert stored["word2vec"] == w2v
    fresh = align_run(tiny_run, sequences=4, grad_sequences=1, figures=False)
    assert fresh["kept"] == ["word2vec"] and fresh["gradient"]["sequences"] == 1
    path = tiny_run / "alignment" / "alignment.json"  # as if computed at another checkpoint: its gradients go
    path.write_text(json.dumps(dict(fresh, step=fresh["step"] - 4)))
    assert align_run(tiny_run, sequences=4, grad_sequences=0, figures=False)["kept"] == ["word2vec"]
    path.write_text(json.dumps(dict(fresh, languages=["L2", "L1"])))  # the pair in the other order: symmetric
    assert align_run(tiny_run, sequences=4, grad_sequences=0, figures=False)["kept"] == ["word2vec", "gradient"]
    path.write_text(json.dumps(dict(fresh, languages=["L1", "L3"])))  # another pair: nothing kept
    assert "kept" not in align_run(tiny_run, sequences=4, grad_sequences=0, figures=False)


def test_each_pair_of_a_runs_languages_keeps_its_own_alignment(tiny_corpus_dir, tiny_run, tmp_path, capsys):
    from xling.analysis.alignment import align_over_training
    from xling.train.trainer import Trainer

    run = tmp_path / "three"  # EN1 + two clones: three pairs
    Trainer(tiny_config(tiny_corpus_dir, languages={"num_clones": 2, "p": 0.4}, train={"keep_checkpoints": "log"}),
            run).fit(progress=False)
    first = align_run(run, sequences=4, grad_sequences=1, figures=False)
    assert first["languages"] == ["L1", "L2"] and (run / "alignment" / "alignment.json").is_file()
    other = align_run(run, pair=("L3", "l1"), sequences=4, grad_sequences=1)  # either order, any case: one pair
    assert other["languages"] == ["L1", "L3"]
    folder = run / "alignment" / "pairs" / "L1+L3"
    assert json.loads((folder / "alignment.json").read_text()) == other and (folder / "hidden.png").is_file()
    assert json.loads((run / "alignment" / "alignment.json").read_text()) == first  # the first pair's is kept
    assert [p.parent.name for p in RunDir(run).alignment_files()] == ["alignment", "L1+L3"]
    # the command line reads the pair's own file back with --reuse, and says which file
    assert main(["align", str(run), "--pair", "L1", "L3", "--reuse", "--sequences", "4"]) == 0
    assert f"read {folder / 'alignment.json'}" in capsys.readouterr().out
    assert main(["align", str(run), "--pair", "L2", "L3", "--sequences", "4", "--grad-sequences", "0",
                 "--no-figures"]) == 0
    assert (run / "alignment" / "pairs" / "L2+L3" / "alignment.json").is_file()
    over = align_over_training(run, pair=("L3", "L2"), sequences=4, grad_sequences=0)
    assert [r["languages"] for r in over] == [["L2", "L3"]] * len(RunDir(run).checkpoint_dirs())
    assert len(list((run / "alignment" / "pairs" / "L2+L3" / "checkpoints").glob("*.json"))) == len(over)
    assert not (run / "alignment" / "checkpoints").exists()  # (the first two languages' over training: none asked)
    with pytest.raises(XlingError, match="unknown language 'L4': this run has L1, L2, L3"):
        align_run(run, pair=("L1", "L4"))
    # several runs: each must have the pair before any is computed, and the one without is named
    shutil.rmtree(run / "alignment")
    assert main(["align", str(run), str(tiny_run), "--pair", "L1", "L3", "--sequences", "4"]) == 2
    assert f"{tiny_run}: unknown language 'L3': this run has L1, L2" in capsys.readouterr().err
    assert not (run / "alignment").exists()


def test_an_older_alignment_of_another_pair_is_neither_taken_for_the_first_pair_nor_lost(tiny_corpus_dir, tmp_path,
                                                                                         capsys):
    """Before 2026-11-29 `--pair L1 L3` wrote alignment/alignment.json, where the first two languages' results go."""
    from xling.train.trainer import Trainer

    run = tmp_path / "three"
    Trainer(tiny_config(tiny_corpus_dir, languages={"num_clones": 2, "p": 0.4}), run).fit(progress=False)
    older = align_run(run, pair=("L1", "L3"), sequences=4, grad_sequences=0, figures=False)
    shutil.rmtree(run / "alignment" / "pairs")
    (run / "alignment" / "alignment.json").write_text(json.dumps(older))  # as the older xling left it, with its
    (run / "alignment" / "hidden.png").write_bytes(b"L1-L3")  # figures and its alignment over training
    (run / "alignment" / "checkpoints").mkdir()
    (run / "alignment" / "checkpoints" / "step_0000004.json").write_text(json.dumps(older))
    assert main(["align", str(run), "--reuse", "--sequences", "4", "--grad-sequences", "0", "--no-figures"]) == 0
    assert f"wrote {run / 'alignment' / 'alignment.json'}" in capsys.readouterr().out  # not read: another pair's
    assert json.loads((run / "alignment" / "alignment.json").read_text())["languages"] == ["L1", "L2"]
    moved = run / "alignment" / "pairs" / "L1+L3" / "alignment.json"
    assert json.loads(moved.read_text()) == older  # kept, in its pair's folder, with its figures and checkpoints
    assert (moved.parent / "hidden.png").read_bytes() == b"L1-L3" and not (run / "alignment" / "hidden.png").exists()
    assert json.loads((moved.parent / "checkpoints" / "step_0000004.json").read_text()) == older
    assert xling_run(run).align(("L3", "L1"), reuse=True) == older


def test_align_user_errors(tiny_run, capsys, tmp_path):
    assert main(["align", str(tiny_run), "--pair", "L1", "XX"]) == 2
    assert "unknown language 'XX'" in capsys.readouterr().err
    assert main(["align", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.corpus
@requires_bible
def test_parallel_probes_for_a_real_pair(tiny_corpus_dir):
    from xling.analysis.probes import parallel_probes
    from xling.data.stream import prepare_languages

    cfg = tiny_config(tiny_corpus_dir, corpus={"name": "bible", "translation": "web", "paths": []},
                      languages={"kind": "real", "p": 0.5, "second": {"name": "bible", "translation": "lsg"}},
                      tokenizer={"vocab_size": 400})
    setup = prepare_languages(cfg)
    probes = parallel_probes(setup, 0, 1, seq_len=32, max_sequences=20)
    assert len(probes) == 20 and not probes.positional
    assert all(len(x) <= 33 and len(y) <= 33 for x, y in zip(probes.a, probes.b))
    assert all(int(x.max()) < 400 <= int(y.max()) for x, y in zip(probes.a, probes.b))  # disjoint ids
    model = tiny_model(vocab=setup.model_vocab, seq_len=32)
    res = hidden_similarity(model, probes, "cpu", nullcontext, batch_size=8)
    assert len(res["layers"]) == 2 and all(np.isfinite(res["layers"]))


def test_parallel_documents_longer_than_a_probe_are_left_out_and_said(tiny_corpus_dir, monkeypatch, caplog):
    """Own parallel test files: documents longer than a probe on a side are left out (the longest: a biased sample),
    said once in a warning and recorded; none fitting names the sizes (the hint suggested doc_per_line, already on)."""
    from xling.analysis import probes as P
    from xling.data.stream import prepare_languages

    cfg = tiny_config(tiny_corpus_dir, corpus={"name": "bible", "translation": "web", "paths": []},
                      languages={"kind": "real", "p": 0.5, "second": {"name": "bible", "translation": "lsg"}},
                      tokenizer={"vocab_size": 400})
    setup = prepare_languages(cfg)
    short, long = ["In the beginning was the word."] * 30, [" ".join(["and the word was with God"] * 20)] * 3
    monkeypatch.setattr(P, "_WARNED", set())
    monkeypatch.setattr(P, "parallel_texts", lambda a, b: (short + long, short + long, "test files", "document"))
    with caplog.at_level("WARNING"):
        probes = [P.parallel_probes(setup, 0, 1, seq_len=32) for _ in range(2)]
    assert probes[0].left_out == {"count": 3, "of": 33, "unit": "document"}
    assert probes[0].source.endswith("(3 of 33 documents longer than that on a side left out)")
    assert caplog.text.count("3 of the 33 held-out documents are longer than the model's sequence (33 tokens) on a "
                             "side and left out") == 1
    monkeypatch.setattr(P, "parallel_texts", lambda a, b: (long, long, "test files", "document"))
    with pytest.raises(XlingError, match=r"the shortest of the 3 held-out documents takes \d+ tokens on its longer "
                                         r"side, a probe at most 33: use a longer model.seq_len, or shorter held-out"):
        P.parallel_probes(setup, 0, 1, seq_len=32)
    tiny = ["Yes."] * 2  # they fit, but are too little text for a probe of a quarter of the sequence a side
    monkeypatch.setattr(P, "parallel_texts", lambda a, b: (tiny, tiny, "test files", "document"))
    with pytest.raises(XlingError, match="the 2 held-out documents pack into no parallel probe of at least 8 tokens on "
                                         "each side: give more held-out text"):
        P.parallel_probes(setup, 0, 1, seq_len=32)


@pytest.mark.slow
def test_analyses_in_worker_processes_give_the_same_results(tiny_corpus_dir, tmp_path):
    import shutil

    from test_study import small_study
    from xling.fsio import read_json
    from xling.report.alignment_results import analyse_trained_run, compute_missing
    from xling.study.runner import run_study

    study = small_study(tiny_corpus_dir, "two-workers", ps=(0.5, 0.1), fractions=(0.1,))
    mixes = [s.id for s in study.runs if s.group == "mix"]
    align = dict(sequences=4, grad_sequences=2, figures=False)
    options = dict(task=None, word2vec=False, **align)
    # as `xling demo` aligns: each bilingual run by the worker that trained it, right after
    trained = []
    run_study(study, tmp_path / "t", workers=2, log=trained.append, progress=False,
              then=(analyse_trained_run, None, False, 0, align))
    for run_id in mixes:
        at = trained.index(f"aligned {run_id}")
        assert trained[at - 1].startswith("[") and f"] {run_id} in " in trained[at - 1]
    assert not any(line.startswith("aligned ") and line[8:] not in mixes for line in trained)
    assert compute_missing(study, tmp_path / "t", workers=2, **options)["aligned"] == 0  # nothing left to do
    for r in "ab":
        shutil.copytree(tmp_path / "t", tmp_path / r, ignore=shutil.ignore_patterns("alignment"))
    lines = []
    here = compute_missing(study, tmp_path / "a", workers=1, **options)
    there = compute_missing(study, tmp_path / "b", workers=2, log=lines.append, **options)
    assert here == there == {"aligned": 2, "transferred": 0, "skipped": 1}
    assert sorted(lines) == sorted(f"aligned {run_id}" for run_id in mixes)
    for spec in study.runs[1:]:
        t, a, b = (read_json(spec.run_dir(tmp_path / r) / "alignment" / "alignment.json") for r in "tab")
        assert t["hidden"] == a["hidden"] == b["hidden"] and t["gradient"] == a["gradient"] == b["gradient"]
    assert compute_missing(study, tmp_path / "b", workers=2, **options)["aligned"] == 0  # nothing left to do
    # aligned the way `xling demo` aligns (no gradients): an analysis that wants them computes them again
    shutil.copytree(tmp_path / "a", tmp_path / "c", ignore=shutil.ignore_patterns("alignment"))
    assert compute_missing(study, tmp_path / "c", workers=1, **dict(options, grad_sequences=0))["aligned"] == 2
    assert compute_missing(study, tmp_path / "c", workers=1, **options)["aligned"] == 2
    assert all("gradient" in read_json(s.run_dir(tmp_path / "c") / "alignment" / "alignment.json")
               for s in study.runs[1:])
    # a precision asked by name replaces gradients taken in another; auto keeps whatever is there
    assert compute_missing(study, tmp_path / "c", workers=1, grad_precision="auto", **options)["aligned"] == 0
    assert compute_missing(study, tmp_path / "c", workers=1, grad_precision="fp16", **options)["aligned"] == 2
    assert all(read_json(s.run_dir(tmp_path / "c") / "alignment" / "alignment.json")["gradient"]["precision"] == "fp16"
               for s in study.runs[1:])
    assert compute_missing(study, tmp_path / "c", workers=1, grad_precision="fp16", **options)["aligned"] == 0


def test_align_report_aligns_every_pair_of_three_languages_when_asked(tiny_corpus_dir, tmp_path):
    from conftest import tiny_config_dict
    from xling.report.alignment_report import write_alignment_report
    from xling.report.alignment_results import collect, compute_missing
    from xling.study.runner import run_study
    from xling.study.spec import build_study

    study = build_study({"name": "three", "paper": "Table 2",
                         "base": tiny_config_dict(tiny_corpus_dir, languages={"num_clones": 2}),
                         "groups": {"mix": {"grid": {"languages.p": [0.5]}}}})
    run_study(study, tmp_path, log=lambda *a: None, progress=False)
    lines = []
    options = dict(task=None, word2vec=False, sequences=4, grad_sequences=1, figures=False)
    assert compute_missing(study, tmp_path, log=lines.append, **options)["aligned"] == 1  # the first two only
    assert compute_missing(study, tmp_path, pairs="all", log=lines.append, **options)["aligned"] == 1
    run_id = study.runs[0].id
    assert lines == [f"aligned {run_id}", f"aligned {run_id} (L1–L3)", f"aligned {run_id} (L2–L3)"]
    assert compute_missing(study, tmp_path, pairs="all", **options)["aligned"] == 0  # nothing left
    # gradients over fewer sequences than asked (and than the probes) are taken again, and hidden states over fewer
    # probes than asked where the text has more; once (a text with fewer probes than asked is no reason to redo them)
    assert compute_missing(study, tmp_path, **dict(options, grad_sequences=2))["aligned"] == 1
    assert compute_missing(study, tmp_path, **dict(options, grad_sequences=2, sequences=10**4))["aligned"] == 1
    again = json.loads((study.runs[0].run_dir(tmp_path) / "alignment" / "alignment.json").read_text())
    assert again["kept"] == ["gradient"] and again["hidden"]["sequences_asked"] == 10**4  # (gradients: as they were)
    assert compute_missing(study, tmp_path, **dict(options, grad_sequences=2, sequences=10**4))["aligned"] == 0
    labels = [s.label for s in collect(study, tmp_path)]
    assert labels == ["L1 50 % – L2 25 %", "L1 50 % – L3 25 %", "L2 25 % – L3 25 %"]  # (p 0.5 of two clones: no 50/50)
    text = write_alignment_report(study, tmp_path, tmp_path / "report", compute=False).read_text()
    table = text.split("| setting | mean over block tensors")[1].split("\n\n")[0].splitlines()
    cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in table[2:]]
    paper = {row[0]: row[-1] for row in cells}
    assert paper == {"L1 50 % – L2 25 %": "", "L1 50 % – L3 25 %": "", "L2 25 % – L3 25 %": ""}  # (the paper's 50/50
    # is a run of two languages)
    with pytest.raises(XlingError, match="pairs is 'first'"):
        compute_missing(study, tmp_path, pairs="every", **options)


def test_a_paper_scale_study_takes_gradients_over_the_authors_500_sequences(tiny_corpus_dir, tmp_path, monkeypatch):
    from test_study import small_study
    from xling.report import alignment_results
    from xling.study.runner import run_study

    study = small_study(tiny_corpus_dir, "grads", ps=(0.5,), fractions=(0.1,))
    run_study(study, tmp_path, log=lambda *a: None, progress=False)
    asked = []
    monkeypatch.setattr(alignment_results, "align_run", lambda run_dir, **options: asked.append(options))
    for scale, expected in (("cpu", 100), ("paper", 500)):
        alignment_results.compute_missing(dataclasses.replace(study, scale=scale), tmp_path, task=None, word2vec=False)
        assert asked.pop()["grad_sequences"] == expected
    alignment_results.compute_missing(dataclasses.replace(study, scale="paper"), tmp_path, task=None, word2vec=False,
                                      grad_sequences=7)
    assert asked.pop()["grad_sequences"] == 7


def test_the_report_says_whether_gradients_were_taken_the_authors_way():
    from xling.report.alignment_report import _gradient_protocol
    from xling.report.alignment_results import Setting

    setting = lambda *grads: Setting("s", "clone", "clone", 0.5, "", alignments=[{"gradient": g} for g in grads])
    assert _gradient_protocol([setting({"precision": "fp16", "sequences": 500})]).startswith(
        "Ours are taken the authors' way: under fp16 autocast without loss scaling, over 500 probe sequences per run.")
    fewer = _gradient_protocol([setting({"precision": "fp16", "sequences": 100})])
    assert fewer.startswith("Ours are taken in fp16 over 100 probe sequences per run, the authors' under fp16")
    mixed = _gradient_protocol([setting({"sequences": 500}, {"precision": "fp16", "sequences": 500})])
    assert mixed.startswith("Ours are taken in fp16 or fp32 (runs or pairs differ) over 500 probe sequences")  # (older: fp32)
    assert _gradient_protocol([setting({"precision": "fp16", "sequences": 500})], paper=False) == (
        "Ours are taken in fp16 over 500 probe sequences per run.")  # (without the paper: no comparison)
    assert _gradient_protocol([setting({"precision": "fp16", "sequences": 500, "nonfinite": 3})]) == (
        "Ours are taken the authors' way: under fp16 autocast without loss scaling, over 500 probe sequences per run "
        "(3 of all runs' 500 sequences gave gradients that are not finite and are left out).")


def test_the_embedding_verdict_counts_the_papers_clone_pair_mean_and_shows_the_excess_beside(tmp_path):
    """The paper's Figure 7 plots the clone-pair mean against p (its all-pairs baseline about flat); where the baseline
    rises with it, the excess above it can fall while the paper's quantity rises: the paper's is counted."""
    from xling.report.alignment_report import _embeddings
    from xling.report.alignment_results import Setting
    from xling.report.doc import Doc
    from xling.report.verdict import Status

    def setting(p, pairs, base, control=(0.5, 0.51, 0.49)):
        return Setting("s", "clone", "clone", p, "", alignments=[
            {"embeddings": {**{kind: {"clone_pairs": c, "all_pairs": b} for kind in ("input", "output")},
                            "by_frequency": []},
             "word2vec": {kind: {"clone_pairs": w, "all_pairs": 0.4} for kind in ("input", "output")},
             "step": 10} for c, b, w in zip(pairs, base, control)])

    imbalanced = setting(0.1, [0.49, 0.50, 0.48], [0.47, 0.485, 0.46])  # rises by 0.05, its excess falls by 0.03
    balanced = setting(0.5, [0.44, 0.45, 0.43], [0.39, 0.40, 0.385])
    evidence = _embeddings(Doc(), [imbalanced, balanced], tmp_path, paper=True)
    counted = [e for e in evidence if e.test]
    assert [e.line.split(":")[0] for e in counted] == [f"{kind} embeddings 90/10 > 50/50, the paper's clone-pair mean"
                                                       for kind in ("input", "output")]
    assert all(e.test.effect == pytest.approx(0.05) and e.test.status == Status.SUPPORTED for e in counted)
    beside = [e for e in evidence if e.line.startswith("the same above the all-pairs baseline")]
    assert len(beside) == 2 and all(e.test is None and "no (" in e.line for e in beside)
    assert not any(e.line.startswith("caveat") for e in evidence)  # the control has no trend
    # where the control rises as well, the counted rise is said to move without alignment; the baseline and the
    # excess are said as they are
    def caveats(imbalanced_setting, balanced_setting=balanced):
        doc = Doc()
        found = [e for e in _embeddings(doc, [imbalanced_setting, balanced_setting], tmp_path, paper=True)
                 if e.line.startswith("caveat")]
        assert [e.test for e in found] == [None] * len(found) and all(f"{e.line[9:]}." in str(doc.blocks)
                                                                      for e in found)
        return [e.line for e in found]

    control = (0.6, 0.61, 0.59)
    shared = caveats(setting(0.1, [0.49, 0.50, 0.48], [0.47, 0.485, 0.46], control))  # the baseline rose most
    assert len(shared) == 2 and all("so are word2vec's, which learns nothing across languages, and so are any two rows "
                                    "of the matrix (its all-pairs baseline is higher too): the paper's measure moves "
                                    "with imbalance without alignment" in line and line.endswith("alignment")
                                    for line in shared)
    flat = caveats(setting(0.1, [0.49, 0.50, 0.48], [0.39, 0.40, 0.385], control))  # the baseline as at 50/50
    assert len(flat) == 2 and all("rows of the matrix" not in line and line.endswith(
        "; above the all-pairs baseline the clone pairs are more similar too (beyond the paper)") for line in flat)


def test_pairs_of_runs_of_more_languages_are_labelled_by_shares_and_schedule():
    from xling.report.alignment_results import Setting

    assert Setting("s", "clone", "clone", 0.5, "", pair="L1 50 % – L3 25 %").label == "L1 50 % – L3 25 %"
    assert Setting("s", "clone", "clone", 0.5, "0.1_0.9", pair="L1 50 % – L3 25 %").label == (
        "schedule 0.1_0.9: L1 50 % – L3 25 %")  # (not the static 50 % run's label)
    assert Setting("s", "real", "anchored", 0.5, "", pair="EN 50 % – FR 25 %").label == "anchored EN 50 % – FR 25 %"
    assert Setting("s", "clone", "clone", 0.1, "").label == "90/10"  # two languages: as ever


def test_alignment_report_of_a_tiny_study(tiny_corpus_dir, tmp_path):
    from conftest import make_documents, tiny_config_dict
    from xling.fsio import read_json
    from xling.report.alignment_report import write_alignment_report
    from xling.study.runner import run_study
    from xling.study.spec import build_study

    study = build_study({"name": "tiny-align", "base": tiny_config_dict(tiny_corpus_dir, train={"keep_checkpoints": "log"}),
                         "groups": {"ladder": {"set": {"languages.p": 0.0}},
                                    "mix": {"grid": {"languages.p": [0.5, 0.1]}}}})
    with pytest.raises(XlingError, match=r"run `xling study run tiny-align --root .*runs` first, then this command"):
        write_alignment_report(study, tmp_path / "runs", tmp_path / "report", compute=False)
    run_study(study, tmp_path / "runs", log=lambda *a: None, progress=False)
    with pytest.raises(XlingError, match="its runs are not aligned yet: run this command without --no-compute"):
        write_alignment_report(study, tmp_path / "runs", tmp_path / "report", compute=False)
    task = tmp_path / "task.csv"
    sentences = sorted({s.strip() for d in make_documents(20, seed=3) for s in d.split(".") if s.strip()})
    task.write_text("text,label\n" + "".join(f"{s},{'king' in s}\n" for s in sentences))
    path = write_alignment_report(study, tmp_path / "runs", tmp_path / "report", task=str(task), log=lambda *a: None,
                                  transfer_steps=5, sequences=4, grad_sequences=2, figures=False)
    text = path.read_text()
    for needle in ("paper Table 2", "Is 90/10 more aligned than 50/50", "paper Figure 6", "paper Figure 7",
                   "paper Figure 1 right", "word2vec input", "50/50", "90/10", "centred cosine", "linear CKA",
                   "translation retrieval", "without the key bias", "Alignment over training",
                   "shuffled pairs (not translations)", "translations above shuffled pairs",
                   "centred cosine above its shuffled pairs, 90/10 > 50/50",
                   "Beyond the paper: the clone-pair cosines of the tokens of the training text only",
                   "output embeddings 90/10 > 50/50, tokens of the training text only, clone pairs above all pairs "
                   "(beyond the paper)", "input embeddings 90/10 > 50/50, the paper's clone-pair mean",
                   "the same above the all-pairs baseline (beyond the paper)"):
        assert needle in text, needle
    assert "gradients 90/10 > 50/50: not tested" not in text
    # the study names no paper: no published values beside ours (the section headings still say what is measured)
    assert "No published values are set beside" in text
    assert not any(needle in text for needle in ("paper (GPT-small)", "| paper |", "paper input", "paper EN2", "0.534"))
    compared = write_alignment_report(dataclasses.replace(study, paper="Table 2"), tmp_path / "runs",
                                      tmp_path / "report-paper", task=str(task), compute=False, figures=False)
    assert all(needle in compared.read_text() for needle in ("paper (GPT-small)", "paper input", "paper EN2", "0.534",
                                                             "Ours are taken in fp32 over 2 probe sequences per run",
                                                             "on other probe text (Europarl", "direction only"))
    assert (tmp_path / "report" / "alignment.html").is_file()
    for name in ("gradient-50-50.png", "embeddings-by-p.png", "embeddings-by-frequency.png", "transfer-by-p.png",
                 "alignment-over-training.png"):
        assert (tmp_path / "report" / name).is_file(), name
    ladder = next(s for s in study.runs if s.group == "ladder").run_dir(tmp_path / "runs")
    assert not (ladder / "alignment").exists()  # a monolingual run has nothing to align
    # The study report then includes the alignment sections, and claim 3 in its table is judged.
    from xling.report.study_report import write_report

    md_path, _ = write_report(study, tmp_path / "runs", tmp_path / "study-report")
    md = md_path.read_text()
    claim3 = next(line for line in md.splitlines() if line.startswith("| 3."))
    assert "not tested" not in claim3 and "Alignment of the languages" in md
    # the transfer ran on a task of its own: the report shows it with that task (xling report --task)
    assert "Zero-shot transfer" not in md
    with_task, _ = write_report(study, tmp_path / "runs", tmp_path / "with-task", task=str(task))
    assert "Zero-shot transfer" in with_task.read_text()
    assert "Partial coverage" not in text and "partial coverage" not in md
    # one run's alignment missing (as after a study reused runs aligned in another): the report says what it lacks
    unaligned = next(s for s in study.runs if s.group == "mix" and s.mixture.p == 0.1).run_dir(tmp_path / "runs")
    shutil.rmtree(unaligned / "alignment")
    partial = write_alignment_report(study, tmp_path / "runs", tmp_path / "report", compute=False, task=str(task),
                                     figures=False).read_text()
    assert ("**Partial coverage** (of the study's 2 finished multilingual runs, 1 aligned): mix: p=0.1 has no "
            "alignment (left out of the alignment tables, figures and verdicts below). `xling align-report "
            f"{study.name} --root {tmp_path / 'runs'} --task {task}` computes what is missing.") in partial
    next((unaligned / "transfer").iterdir()).unlink()  # and one run's transfer: said too
    partial = write_alignment_report(study, tmp_path / "runs", tmp_path / "report", compute=False, task=str(task),
                                     figures=False).read_text()
    note = next(line for line in partial.splitlines() if line.startswith("**Partial coverage**"))
    assert "; no transfer result on task for runs of mix: p=0.1." in note and "p=0.5" not in note
    unjudged = [line for line in text.splitlines() if line.startswith("- the same above the shuffled baseline")]
    assert unjudged and all(line.endswith("(shown beside, not counted in the verdict)") for line in unjudged)
    assert "verdict (claims 3 and 8 of the paper's §6) from the runs with results only" in partial  # (9: real pairs)
    for spec in study.runs:  # aligned as `xling demo` aligns, without gradients: claim 3 says it lacks them
        path = spec.run_dir(tmp_path / "runs") / "alignment" / "alignment.json"
        if path.is_file():
            path.write_text(json.dumps({k: v for k, v in read_json(path).items() if k != "gradient"}))
    partial = write_alignment_report(study, tmp_path / "runs", tmp_path / "report", compute=False, task=str(task),
                                     figures=False).read_text()
    assert ("- gradients 90/10 > 50/50: not tested (the runs were aligned without gradients; `xling align-report` "
            "computes them)") in partial


def test_word2vec_asked_of_a_pair_without_clone_pairs_says_it_was_not_trained(tiny_corpus_dir, tmp_path, capsys):
    from xling.train.trainer import Trainer

    run = tmp_path / "shared"  # frac_clone 0: the two languages share every id, so no clone pair exists
    Trainer(tiny_config(tiny_corpus_dir, languages={"frac_clone": 0.0}, train={"steps": 4}), run).fit(progress=False)
    assert main(["align", str(run), "--word2vec", "--sequences", "4", "--grad-sequences", "0", "--no-figures"]) == 0
    assert "this pair has none, so it was not trained" in capsys.readouterr().err


def test_aligning_a_monolingual_run_says_the_other_language_never_trained(tiny_corpus_dir, tmp_path, capsys):
    from xling.train.trainer import Trainer

    run = tmp_path / "mono"
    Trainer(tiny_config(tiny_corpus_dir, languages={"p": 0.0}, train={"steps": 4}), run).fit(progress=False)
    assert main(["align", str(run), "--sequences", "4", "--grad-sequences", "0", "--no-figures"]) == 0
    assert "L2 had no training tokens (a monolingual run)" in capsys.readouterr().err


def test_alignment_over_training_of_a_run_that_kept_only_its_last_checkpoints_says_so(tiny_run, tmp_path, caplog):
    import shutil

    from xling.analysis.alignment import align_over_training

    run = shutil.copytree(tiny_run, tmp_path / "run")  # (keep_checkpoints: last, the default)
    with caplog.at_level("WARNING"):
        results = align_over_training(run, sequences=4, grad_sequences=0)
    assert len(results) == len(RunDir(run).checkpoint_dirs()) == 2
    assert "kept only its last checkpoints (train.keep_checkpoints: last)" in caplog.text


def test_frequency_counts_of_a_pinned_budget_are_of_the_windows_it_reads(tiny_corpus_dir):
    """Embedding frequency bins count the training text; under a pinned budget (train.budget_tokens, the paper's 1x
    of a larger corpus) the windows a monolingual run of that budget reads, as the authors count the first 1x."""
    from xling.analysis.embeddings import training_counts
    from xling.data.stream import TrainStream, prepare_languages

    setup = prepare_languages(tiny_config(tiny_corpus_dir))
    train = np.asarray(setup.tokens(0, "train"))
    whole, budget = training_counts(setup), training_counts(setup, budget_rows=40, seq_len=32, seed=3)
    assert whole.sum() == len(train) and budget.sum() == 40 * 32
    windows = TrainStream(setup, np.zeros(40, dtype=np.int64), 32, 3).windows_of(0, 40)  # a mono run's first 40 rows
    read = np.concatenate([train[w * 32:(w + 1) * 32] for w in windows])
    assert (budget == np.bincount(read, minlength=len(budget))[:len(budget)]).all()


def test_a_setting_of_many_languages_is_labelled_by_name_and_pair_not_by_p():
    """Runs of languages.corpora mix by shares: their setting is never read as 50/50 or 90/10 (their p is unused)."""
    from xling.report.alignment_results import Setting, find

    many = Setting("mix-fr", "real", "disjoint", math.nan, "", alignments=[{"languages": ["EN", "FR"]}])
    pair = Setting("mix-p0.1", "real", "disjoint", 0.1, "")
    assert many.label == "disjoint mix-fr (EN–FR)" and pair.label == "disjoint 90/10"
    assert find([many, pair], "real", 0.1) is pair and find([many], "real", 0.1) is None


def test_align_report_skips_the_bible_task_only_for_real_languages_of_your_own_text():
    """(align-report without --task stopped midway on them: the bible-parts task has no verses in those languages)"""
    from xling.config import from_dict
    from xling.report.alignment_results import _own_real_text

    own = {"corpus": {"name": "text", "paths": ["en"]}, "languages": {"kind": "real", "second": {"name": "text",
                                                                                                 "paths": ["sw"]}}}
    assert _own_real_text(from_dict(own))
    assert not _own_real_text(from_dict({"languages": {"kind": "real"}}))  # English and French Bibles
    assert not _own_real_text(from_dict({"corpus": {"name": "text", "paths": ["en"]}}))  # clones: the task's English
