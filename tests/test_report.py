"""Reports: statistics, published numbers, TEff wiring, verdicts and the rendered Markdown / HTML / PNGs."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import shutil
import sqlite3

import pytest

from test_study import completed_study
from xling.analysis.efficiency import efficiency
from xling.analysis.scaling_law import fit_scaling_law
from xling.cli import main
from xling.errors import XlingError
from xling.report import published
from xling.report.claims import headline, verdicts
from xling.report.stats import Stat, diff_interval, fmt, fmt_interval, fmt_stat, log_stat, t_stat
from xling.report.study_report import write_report
from xling.report.summary import analyse
from xling.report.verdict import NOT_TESTED, Check, Evidence, Status, combine, compare, vs_one
from xling.study.store import Store


@pytest.fixture
def tiny_study(tmp_path_factory, tiny_corpus_dir):
    """The tiny study of test_study.py, run once per session."""
    return completed_study(tmp_path_factory, tiny_corpus_dir)


def test_t_interval_over_seeds():
    s = t_stat([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.n == 3
    assert s.half == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)  # t(0.975, 2) * sd / sqrt(n)
    one = t_stat([1.5])
    assert (one.mean, one.lo, one.hi) == (1.5, 1.5, 1.5)
    d, lo, hi = diff_interval(t_stat([3.0, 3.1, 2.9]), t_stat([1.0, 1.1, 0.9]))
    assert d == pytest.approx(2.0) and 1.5 < lo < 2.0 < hi < 2.5


def test_perplexities_are_summarised_on_the_log_scale():
    s = log_stat([10.0, 100.0, 1000.0])
    assert s.log and s.mean == pytest.approx(100.0)  # geometric mean
    half = 4.3027 * math.log(10) / math.sqrt(3)  # t(0.975, 2) * sd(ln) / sqrt(n)
    assert (s.lo, s.hi) == (pytest.approx(100 * math.exp(-half), rel=1e-3), pytest.approx(100 * math.exp(half), rel=1e-3))
    assert s.lo > 0 and t_stat([10.0, 100.0, 1000.0]).lo < 0  # a linear interval would reach below zero
    d, lo, hi = diff_interval(log_stat([200.0, 220.0, 180.0]), log_stat([100.0, 110.0, 90.0]))
    assert d == pytest.approx(math.log(2), abs=0.01) and 0 < lo < d < hi  # the log of the ratio
    with pytest.raises(ValueError):
        diff_interval(log_stat([1.0, 2.0]), t_stat([1.0, 2.0]))


def test_a_language_forgotten_in_one_seed_is_still_clearly_worse():
    """A hard switch forgets EN1 in every seed (perplexities in the tens of thousands, as in
    table1-cpu): on the log scale that is significant, while the linear interval of the raw
    perplexities, dominated by their spread, straddles zero."""
    forgotten, kept = [40_000.0, 150_000.0, 65_000.0], [150.0, 160.0, 155.0]
    assert compare(log_stat(forgotten), log_stat(kept), smaller=False).status == "supported"
    assert compare(t_stat(forgotten), t_stat(kept), smaller=False).status == "direction holds, not significant"
    assert fmt_stat(log_stat(kept)).startswith("154.9") and "[" in fmt_stat(log_stat(kept))


def test_verdict_words_follow_the_intervals():
    clear, weak = t_stat([2.0, 2.1, 1.9]), t_stat([1.1, 1.3, 1.2])
    assert vs_one(clear).status == "supported"
    assert vs_one(weak).status == "direction holds, not significant"
    assert vs_one(t_stat([0.8, 0.81, 0.79])).status == "contradicted"
    assert vs_one(t_stat([0.8, 0.81, 0.79]), above=False).status == "supported"
    assert compare(clear, weak, smaller=False).status == "supported"
    assert compare(weak, clear, smaller=False).status == "contradicted"
    assert compare(Stat(2.0, 2.0, 2.0, 1, (2.0,)), Stat(1.0, 1.0, 1.0, 1, (1.0,)), smaller=False).status.startswith("direction holds")


def test_published_numbers_are_looked_up_by_setting():
    assert published.lookup(published.Setting(p=0.1), "L2").teff == 2.08
    assert published.lookup(published.Setting(p=0.5), "L2").teff == 0.89
    assert published.lookup(published.Setting(p=0.1, length=2.0), "L2").teff == 3.29
    assert published.lookup(published.Setting(p=0.5, schedule="0.1_0.9"), "L1").ppl == 26.53
    assert published.lookup(published.Setting("real", 0.1, vocab="anchored"), "L2").teff == 1.27
    assert published.lookup(published.Setting(p=0.0, length=0.1), "L1").ppl == 48.36  # monolingual ladder
    assert published.lookup(published.Setting(p=0.1, model="medium"), "L2").approx
    assert published.lookup(published.Setting(p=0.1, frac_clone=0.5), "L2") is None


def _analysis(study, root):
    store = Store(root / "xling.db")
    return analyse(study, store.runs(study.name), store.evaluations(study.name), root)


def test_teff_is_computed_for_every_language_of_every_bilingual_run(tiny_study):
    study, root = tiny_study
    a = _analysis(study, root)
    assert a.laws and not a.missing
    bilingual = [r for r in a.rows if not r.mono]
    assert len(bilingual) == 2 * sum(1 for r in study.runs if r.group == "mix")
    assert all(math.isfinite(r.teff) and r.teff > 0 and math.isfinite(r.mlpe) for r in bilingual)
    minority = next(s for s in a.summaries if s.role == "L2" and s.key.p == 0.1)
    assert minority.teff.n == 2 and minority.paper.teff == 2.08
    run_fraction = next(r for r in a.rows if r.spec.id == minority.spec.id and r.role == "L1").fraction / 0.9
    assert minority.fraction == pytest.approx(0.1 * run_fraction, rel=1e-12)  # the paper's accounting: p/k exactly
    assert minority.fraction_sampled != minority.fraction  # the sampled share differs, and is shown beside it
    assert set(minority.teff_forms) == {"loss", "paper", "ladder"} and math.isfinite(minority.teff_sampled.mean)
    for r in bilingual:  # the ladder's own reading: an MLTE inside the ladder's fractions, or none
        x, _ = a.ladder_points[r.law]
        mlte = r.teff_forms["ladder"] * r.fraction
        assert math.isnan(mlte) or min(x) <= mlte <= max(x)
    for key, form in a.verdict_form.items():  # the verdict's form has the lower leave-one-out error
        assert a.loo[key][form] <= min(a.loo[key].values()) and a.laws[key] is a.laws_by_form[form][key]


@pytest.mark.parametrize("verdict_form", ["loss", "paper"])
def test_the_paper_forms_law_warnings_reach_the_rows_where_the_verdict_uses_the_other_form(tiny_study, monkeypatch,
                                                                                           verdict_form):
    """A degenerate paper-form fit makes the comparison with a published TEff loose: the row says so."""
    from xling.analysis import efficiency
    from xling.report import summary

    fake = lambda law: [f"a {law.form}-form warning"]
    monkeypatch.setattr(efficiency, "law_warnings", fake)
    monkeypatch.setattr(summary, "law_warnings", fake)
    monkeypatch.setattr(summary, "better_form", lambda loo: verdict_form)
    study, root = tiny_study
    a = _analysis(study, root)
    scored = [r for r in a.rows if r.law]
    assert scored
    for r in scored:
        assert f"a {verdict_form}-form warning" in r.warnings
        assert ("under the paper's law form: a paper-form warning" in r.warnings) == (verdict_form == "loss")


def test_claims_are_judged_again_under_the_papers_law_form(tiny_study, tmp_path):
    """`under_form` swaps every TEff for the paper-form one and nothing else; the report's claims table
    has a column judging the claims with it."""
    from xling.report.summary import under_form

    study, root = tiny_study
    a = _analysis(study, root)
    paper = under_form(a, "paper")
    for s, t in zip(a.summaries, paper.summaries):
        assert t.teff == s.teff_forms["paper"] and t.ppl == s.ppl and t.teff_forms == s.teff_forms
    assert all(form == "paper" for form in paper.verdict_form.values())
    # rows too (the questions beyond the paper read each run's TEff), with perplexities untouched
    assert [r.teff for r in paper.rows] == [r.teff_forms.get("paper", r.teff) for r in a.rows]
    assert [r.ppl for r in paper.rows] == [r.ppl for r in a.rows]
    assert any(r.teff != s.teff for r, s in zip(paper.rows, a.rows))
    by_paper = {v.claim: v.status for v in verdicts(paper)}
    md = write_report(study, root, tmp_path / "rep")[0].read_text()
    assert ("| claim (the paper's §6) | our result (verdict's law form) | under the paper's law form "
            "| read off the ladder (no law) |") in md
    by_ladder = {v.claim: v.status for v in verdicts(under_form(a, "ladder"))}
    row = next(line for line in md.splitlines() if line.startswith("| 1. "))
    assert row.endswith(f"| {by_paper['1']} | {by_ladder['1']} |")


def test_the_demos_claim_lines_name_the_checks_that_make_a_claim_mixed(tiny_study, tmp_path):
    """'claim 3: mixed' was printed with only the hidden-state checks above it, both for the paper or not significant:
    the check against the paper (an embedding's, say) is named under it."""
    import dataclasses

    from xling.report.claims import claim_lines, verdicts

    study, root = tiny_study
    _, a = write_report(study, root, tmp_path / "rep")
    plain = claim_lines(a)
    assert plain and all(line.startswith("claim ") for line in plain)
    assert [line.split(":")[0] for line in plain] == [f"claim {v.claim}" for v in verdicts(a)
                                                      if v.status is not Status.NOT_TESTED]
    mixed = dataclasses.replace(a, alignment=[
        Evidence("3", "hidden states 90/10 > 50/50: yes", Check(Status.SUPPORTED, 0.1, (0.05, 0.15))),
        Evidence("3", "output embeddings 90/10 > 50/50: no", Check(Status.CONTRADICTED, -0.02, (-0.04, -0.01))),
        Evidence("3", "the same above the shuffled baseline: not significant")])
    lines = claim_lines(mixed)
    at = lines.index("claim 3: mixed: checks significant both ways")
    assert lines[at + 1] == "  against the paper: output embeddings 90/10 > 50/50: no"
    partly = dataclasses.replace(a, alignment=[mixed.alignment[0], Evidence(
        "3", "output embeddings 90/10 > 50/50: not significant", Check(Status.NOT_SUPPORTED, 0.01, (-0.02, 0.04)))])
    lines = claim_lines(partly)
    at = lines.index("claim 3: partly")
    assert lines[at + 1] == "  its other checks: output embeddings 90/10 > 50/50: not significant"


def test_report_renders_tables_figures_and_verdict(tiny_study, tmp_path):
    study, root = tiny_study
    path, a = write_report(study, root, tmp_path / "rep")
    md = path.read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    for text in ("## Verdict", "Perplexity and token efficiency", "Monolingual ladder", "2.08", "0.89", "26.13",
                 "No run repeated data", "TEff (paper form)", "TEff (loss form)", "TEff (sampled share)",
                 "leave-one-out error", "used by the verdicts"):
        assert text in md, text
    minority = next(s for s in a.summaries if s.role == "L2" and s.key.p == 0.1)
    assert f"{minority.teff.mean:.2f} ± {minority.teff.half:.2f}" in md  # our number, mean ± CI
    paper_form = minority.teff_forms["paper"]
    assert f"{paper_form.mean:.2f} ± {paper_form.half:.2f} under the paper's law form (paper: 2.08)" in md
    # the claims' lines set the published TEff beside ours under the paper's own form when the verdict's differs
    claim_1 = next(line for line in md.splitlines() if "minority" in line and "(paper: 2.08" in line and "TEff" in line
                   and "under the paper's law form (paper" not in line)
    same = fmt_interval(paper_form) == fmt_interval(minority.teff)
    assert ("(paper: 2.08)" if same else f"(paper: 2.08; ours under the paper's law form {fmt_interval(paper_form)})") \
        in claim_1
    assert "<style>" in html and "<table>" in html and 'src="data:image/png;base64,' in html  # embedded
    assert 'src="ladder.png"' not in html and "](ladder.png)" in md
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert "ladder.png" in pngs and len(pngs) == 3
    assert all((tmp_path / "rep" / p).stat().st_size > 1000 for p in pngs)
    svgs = sorted(p.name for p in (tmp_path / "rep").glob("*.svg"))  # vector copies, for papers
    assert svgs == [p.replace(".png", ".svg") for p in pngs]
    assert all((tmp_path / "rep" / p).read_text().lstrip().startswith("<?xml") for p in svgs)
    lines = headline(a)
    assert "90/10" in lines[0] and "(paper: 2.08)" in lines[0] and "(paper: 0.89)" in lines[1]
    # how far one ladder point moves the paper-form TEff that is set beside the published one
    fractions, ppls = a.ladder_points[minority.law]  # (refitted here by the general path: fit, then efficiency)
    moved = [efficiency(fit_scaling_law([f for j, f in enumerate(fractions) if j != i],
                                        [p for j, p in enumerate(ppls) if j != i], form="paper", bootstrap=0),
                        minority.fraction, minority.ppl.mean).teff for i in range(len(fractions))]
    assert len(moved) == len(fractions) >= 4
    assert f"with one of the ladder's {len(fractions)} points left out" in lines[0]
    assert f"moves to {min(moved):.2f}-{max(moved):.2f}" in lines[0]
    assert "direction" in lines[2] and ("HOLDS" in lines[2] or "NOT" in lines[2])
    # the law's own uncertainty at the mean PPL: the profile-likelihood interval, then the bootstrap's, each
    # containing the TEff the law gives there
    found = re.search(r"TEff at the mean PPL ([\d.]+), ladder-fit ranges \[([\d.]+), ([\d.]+|inf)\] \(profile "
                      r"likelihood, F with n-3 dof\), \[([\d.]+), ([\d.]+)\] \(bootstrap percentiles\)", lines[0])
    assert found, lines[0]
    centre, *ends = (float(v) for v in found.groups())
    assert ends[0] <= centre <= ends[1] and ends[2] <= centre <= ends[3]
    claims = {v.claim: v.status for v in verdicts(a)}
    assert claims["3"] == "not tested" and claims["1"] != "not tested" and claims["2a"] != "not tested"
    assert claims["2b"] == "not tested"  # one training length only
    one_seed = copy.copy(a)  # one seed: no interval, so the direction is not called significant or not
    one_seed.summaries = [dataclasses.replace(s, teff=Stat(s.teff.mean, s.teff.mean, s.teff.mean, 1))
                          for s in a.summaries]
    direction = headline(one_seed)[2]
    assert "in the means (not tested: one seed, no interval)" in direction and "NOT" not in direction
    assert "[" not in direction
    one_seed.summaries = [dataclasses.replace(s, teff=Stat(math.nan, math.nan, math.nan, 0)) for s in a.summaries]
    assert "is not tested (no TEff: the study has no monolingual ladder)" in headline(one_seed)[2]
    a.loo = {key: {form: math.nan for form in errors} for key, errors in a.loo.items()}  # a 3-point ladder
    assert "the default: leave-one-out needs a ladder of at least 4 fractions" in headline(a)[0]
    a.laws.clear()  # as for a study without a monolingual ladder: no law, so no TEff and no form chosen
    assert all("no TEff" in line and "leave-one-out" not in line for line in headline(a)[:2])


def test_report_says_when_data_was_repeated(tiny_study, tmp_path):
    study, root = tiny_study
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    run_dir = study.runs[-1].run_dir(copy)
    info = json.loads((run_dir / "run.json").read_text())
    info["data_epochs"] = {k: 1.5 for k in info["data_epochs"]}
    (run_dir / "run.json").write_text(json.dumps(info))
    (copy / "xling.db").unlink()
    path, _ = write_report(study, copy, tmp_path / "rep")
    assert "Data was repeated" in path.read_text() and "1.50 passes" in path.read_text()


def test_report_says_when_runs_trained_in_different_precisions(tiny_study, tmp_path):
    """precision auto differs between CPUs (bf16 only where it pays): a study run on several machines can mix them."""
    study, root = tiny_study
    md = write_report(study, root, tmp_path / "rep")[0].read_text()
    assert "Every run trained in fp32" in md and "different precisions" not in md
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    run_dir = study.runs[-1].run_dir(copy)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "precision": "bf16"}))
    switched = study.runs[0].run_dir(copy)  # resumed on a machine where bf16 is emulated: it went on in fp32
    info = json.loads((switched / "run.json").read_text())
    (switched / "run.json").write_text(json.dumps({**info, "precision": "fp32", "precisions": ["bf16", "fp32"]}))
    md = write_report(study, copy, tmp_path / "rep2")[0].read_text()
    assert f"**The runs trained in different precisions**: bf16 then fp32 (1: {study.runs[0].id}); " \
           f"fp32 ({len(study.runs) - 2}: " in md
    assert f"; bf16 (1: {study.runs[-1].id})" in md and "Every run trained in" not in md
    for spec in study.runs[:-1]:  # the others record none (an older xling's runs): not a precision of their own
        info = json.loads((spec.run_dir(copy) / "run.json").read_text())
        (spec.run_dir(copy) / "run.json").write_text(json.dumps({k: v for k, v in info.items() if "precision" not in k}))
    evaluation = json.loads((study.runs[-1].run_dir(copy) / "eval.json").read_text())
    (study.runs[-1].run_dir(copy) / "eval.json").write_text(json.dumps({**evaluation, "precision": "fp32"}))
    md = write_report(study, copy, tmp_path / "rep3")[0].read_text()
    assert "different precisions" not in md and "Every run that records it trained in bf16" in md
    assert f"run.json records no precision for: {study.runs[0].id}, " in md
    assert f"**Evaluated in another precision than they trained in** (the device that evaluated them does not multiply " \
           f"theirs natively): {study.runs[-1].id} (trained in bf16, evaluated in fp32)." in md


def test_a_run_evaluated_at_an_earlier_checkpoint_is_left_out_and_named(tiny_study, tmp_path):
    """Its perplexity is not its last step's: placed at the run's full length it would be a false point."""
    study, root = tiny_study
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    spec = next(r for r in study.runs if r.group == "mix")
    path = spec.run_dir(copy) / "eval.json"
    report = json.loads(path.read_text())
    report["step"] //= 2  # as `xling eval` writes it when the newest checkpoint does not verify
    report["tokens_trained"] = {k: v // 2 for k, v in report["tokens_trained"].items()}
    path.write_text(json.dumps(report))
    (copy / "xling.db").unlink()
    md, a = write_report(study, copy, tmp_path / "rep")
    steps = json.loads((spec.run_dir(copy) / "run.json").read_text())["steps"]
    said = f"{spec.id} (step {report['step']} of {steps})"
    assert a.earlier == [said] and spec.id not in {r.spec.id for r in a.rows} and not a.missing
    assert f"Evaluated at an earlier checkpoint than their last step, so left out: {said}" in md.read_text()
    evals = {e["language"]: e for e in Store(copy / "xling.db").evaluations(study.name) if e["run_id"].endswith(spec.id)}
    assert {k: e["tokens_trained"] for k, e in evals.items()} == report["tokens_trained"]  # the checkpoint's own


@pytest.mark.parametrize("where", ["another root's", "its own, not there"])
def test_a_store_row_whose_run_directory_is_not_under_the_root_is_no_result(tiny_study, tmp_path, where):
    """The report used the store's completed rows even where the run directory did not exist under the root: a
    received store's forged rows (or those of another root sharing --db) reached the report."""
    study, root = tiny_study
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)  # its store's rows name the run directories under `root`
    spec = next(r for r in study.runs if r.group == "mix")
    shutil.rmtree(spec.run_dir(copy))
    if where == "its own, not there":
        with sqlite3.connect(copy / "xling.db") as db:
            db.execute("UPDATE runs SET run_dir = ? WHERE name = ?", (str(spec.run_dir(copy)), spec.id))
    md, a = write_report(study, copy, tmp_path / "rep")
    assert a.missing == [spec.id] and spec.id not in {r.spec.id for r in a.rows}
    assert f"Missing (not yet run, interrupted, or damaged: `xling study status {study.name}` says which): " \
           f"{spec.id}" in md.read_text()


def test_a_study_that_names_no_paper_gets_no_published_values(tiny_study, tmp_path):
    study, root = tiny_study
    own = dataclasses.replace(study, paper="none")
    a = _analysis(own, root)
    assert a.summaries and all(s.paper is None for s in a.summaries + a.ladder)
    assert any(s.paper is not None for s in _analysis(study, root).summaries)  # the same runs under "Table 1"
    md = write_report(own, root, tmp_path / "rep")[0].read_text()
    assert "No published values are set beside these results" in md and "(paper: " not in md


def test_report_without_results_is_a_clear_error(tiny_study, tmp_path, capsys):
    study, _ = tiny_study
    with pytest.raises(XlingError, match="no finished runs"):
        write_report(study, tmp_path / "empty", tmp_path / "rep")
    assert main(["report", "no-such-study-xyz"]) == 2
    assert "unknown study" in capsys.readouterr().err


def _summary(role, ppl, teff, **setting):
    from types import SimpleNamespace

    from xling.report.summary import Summary

    key = published.Setting(**{"model": "cpu-xs", **setting})
    label = {"L1": "EN1", "L2": "EN2"}[role]
    return Summary(f"{setting}", "g", label, role, key, "small", SimpleNamespace(config={}), 0.5, 0.5,
                   t_stat(ppl), math.nan, t_stat(teff), {"loss": t_stat(teff), "paper": t_stat(teff)}, t_stat(teff),
                   None, [], None)


def test_verdicts_on_synthetic_settings_follow_the_paper_claims():
    from types import SimpleNamespace

    from xling.report.summary import Analysis

    S = [
        # 1x and 3x, 50/50 and 90/10: the 90/10 advantage grows and wins on both languages at 3x.
        _summary("L1", [30, 31, 30.5], [0.9, 0.92, 0.91], p=0.5, length=1.0),
        _summary("L2", [30, 31, 30.5], [0.9, 0.92, 0.91], p=0.5, length=1.0),
        _summary("L1", [25, 25.2, 25.1], [1.0, 1.01, 0.99], p=0.1, length=1.0),
        _summary("L2", [40, 41, 40.5], [2.0, 2.1, 2.2], p=0.1, length=1.0),
        _summary("L1", [22, 22.2, 22.1], [0.6, 0.62, 0.61], p=0.5, length=3.0),
        _summary("L2", [22, 22.2, 22.1], [0.6, 0.62, 0.61], p=0.5, length=3.0),
        _summary("L1", [19, 19.1, 19.2], [1.0, 1.0, 1.0], p=0.1, length=3.0),
        _summary("L2", [21, 21.1, 21.2], [3.1, 3.2, 3.3], p=0.1, length=3.0),
        # curriculum beats static 50/50 at 3x on both; the hard switch forgets EN1.
        _summary("L1", [21, 21.1, 21.2], [0.7] * 3, p=0.5, schedule="0.1_0.9", length=3.0),
        _summary("L2", [20, 20.1, 20.2], [0.9] * 3, p=0.5, schedule="0.1_0.9", length=3.0),
        _summary("L1", [60, 62, 61], [0.2] * 3, p=0.5, schedule="0.0_1.0", length=1.0),
        # ten languages, uniform.
        _summary("L1", [35, 35.2, 35.1], [1.6, 1.7, 1.65], p=0.9, num_clones=9),
        _summary("L2", [35, 35.2, 35.1], [1.6, 1.7, 1.65], p=0.9, num_clones=9),
    ]
    study = SimpleNamespace(runs=[SimpleNamespace(config={"model": {"preset": "cpu-xs"}})])
    a = Analysis(study, [], {}, S, [], [], [], [], 1.0, [])
    claims = {v.claim: v.status for v in verdicts(a)}
    assert claims["1"] == "supported" and claims["2a"] == "supported" and claims["2b"] == "supported"
    assert claims["4"] == "supported"
    assert claims["5a"] == "supported" and claims["5b"] == "supported" and claims["6"] == "supported"
    assert claims["7"] == "not tested" and claims["3"] == "not tested"
    # With align-report's verdicts, claims 3 and 8 are judged from them (the word2vec control,
    # answer None, is shown but not counted).
    alignment = [Evidence("3", "hidden states ...", Check(Status.SUPPORTED, 0.05, (0.01, 0.09))),
                 Evidence("3", "gradients ...", Check(Status.HOLDS, 0.01, (-0.02, 0.04))),
                 Evidence("3", "word2vec input ..."),
                 Evidence("8", "zero-shot transfer ...", Check(Status.CONTRADICTED, -0.05, (-0.09, -0.01)))]
    judged = {v.claim: v for v in verdicts(a, alignment)}
    assert judged["3"].status is Status.PARTLY and len(judged["3"].evidence) == 3
    assert judged["3"].effect == 0.05 and judged["3"].interval == (0.01, 0.09)  # the first check's
    assert judged["8"].status is Status.CONTRADICTED
    assert any("run `xling align-report`" in line for line in {v.claim: v for v in verdicts(a)}["3"].evidence)
    # a study without cloned 50/50 and 90/10 runs never gets these from align-report: it says so, not "run it"
    real = Analysis(study, [], {}, [_summary("L2", [40, 41, 40.5], [2.0, 2.1, 2.2], p=0.1, kind="real")],
                    [], [], [], [], 1.0, [])
    unclonable = {v.claim: v for v in verdicts(real)}
    assert unclonable["3"].evidence == ["The study has no cloned 50/50 and 90/10 runs to compare."]


def test_alignment_answers_are_worded_from_the_check_never_read_back():
    """A comparison is judged once (`compare`); its answer in words follows from the Check."""
    higher, lower = t_stat([0.50, 0.52, 0.51]), t_stat([0.40, 0.41, 0.42])
    assert compare(higher, lower).status is Status.SUPPORTED
    assert compare(higher, lower).answer().startswith("yes (Δ = +0.100, 95 % CI [+0.0")
    assert compare(lower, higher).status is Status.CONTRADICTED and compare(lower, higher).answer().startswith("no (")
    noisy = t_stat([0.30, 0.60, 0.45])
    assert compare(noisy, t_stat([0.40, 0.41, 0.42])).status is Status.HOLDS
    assert compare(noisy, t_stat([0.40, 0.41, 0.42])).answer().startswith("not significant (Δ = +0.0")
    assert compare(t_stat([0.40, 0.41, 0.42]), noisy).status is Status.NOT_SUPPORTED
    one = compare(Stat(0.52, 0.52, 0.52, 1, (0.52,)), Stat(0.50, 0.50, 0.50, 1, (0.50,)))
    assert one.status is Status.HOLDS_ONE_SEED and one.answer() == "yes in one seed (Δ = +0.020; no interval)"
    assert NOT_TESTED.answer() == "not tested" and compare(Stat(0, 0, 0, 0), higher) is NOT_TESTED
    # No difference at all (e.g. both settings at the majority class) is not the paper's direction.
    same = compare(t_stat([0.14, 0.14, 0.14]), t_stat([0.14, 0.14, 0.14]))
    assert same.status is Status.NOT_SUPPORTED and same.effect == 0.0


def test_the_learning_rate_is_chosen_by_validation_perplexity_over_seeds(tiny_corpus_dir, tmp_path):
    """The rate whose seed interval ends lowest: a lucky seed does not win over a stable rate."""
    from test_study import tiny_study_dict
    from xling.report.tuning import learning_rates
    from xling.study.spec import build_study

    data = tiny_study_dict(tiny_corpus_dir, seeds=(0, 1))
    data["groups"] = {"mono": {"set": {"languages.p": 0.0}, "grid": {"train.lr": [0.001, 0.003, 0.008]}}}
    data["figures"] = []  # (their x, languages.p, is no longer a grid key)
    study = build_study(data)
    valid = {0.001: (80.0, 81.0), 0.003: (60.0, 61.0), 0.008: (50.0, 90.0)}  # 0.008: one lucky seed
    for spec in study.runs:
        run = spec.run_dir(tmp_path)
        run.mkdir(parents=True)
        ppl = valid[spec.dims["train.lr"]][spec.dims["train.seed"]]
        (run / "run.json").write_text(json.dumps({"status": "completed", "valid": {"L1": {"ppl": ppl}}}))
        (run / "eval.json").write_text("{}")
    rows = learning_rates(study, tmp_path)
    assert [r["lr"] for r in rows] == [0.001, 0.003, 0.008]
    assert [r["lr"] for r in rows if r["best"]] == [0.003]
    assert rows[1]["valid_ppl"].mean == pytest.approx(math.sqrt(60 * 61))


@pytest.mark.parametrize("statuses, combined", [
    (["supported", "supported", "not tested"], "supported"),
    (["supported", "direction holds, not significant"], "partly"),
    (["supported", "contradicted"], "mixed: checks significant both ways"),  # not "partly": a part goes against it
    (["supported", "not supported", "contradicted"], "mixed: checks significant both ways"),
    (["partly", "contradicted"], "mixed: checks significant both ways"),
    (["mixed: checks significant both ways", "supported"], "mixed: checks significant both ways"),
    # nothing significant for the paper: a direction that holds does not make it "partly"
    (["direction holds, not significant", "contradicted", "contradicted"], "not supported"),
    (["direction holds, not significant", "not supported"], "not supported"),
    (["direction holds, not significant", "direction holds (one seed, no interval)"], "direction holds, not significant"),
    (["direction holds (one seed, no interval)", "not supported (one seed)"], "not supported (one seed)"),
    (["direction holds (one seed, no interval)", "direction holds (one seed, no interval)", "not tested"],
     "direction holds (one seed, no interval)"),
    (["not tested"], "not tested"),
])
def test_combine_calls_a_claim_partly_only_where_some_part_is_supported(statuses, combined):
    assert combine([Status(s) for s in statuses]) is Status(combined)



def test_a_mark_column_without_marks_is_left_out_of_a_table():
    from xling.report.doc import Doc

    doc = Doc()
    doc.table(["setting", "seeds", ""], [["50/50", 3, ""], ["90/10", 3, ""]])
    doc.table(["setting", "seeds", ""], [["50/50", 3, ""], ["90/10", 3, "†"]])
    unmarked, marked = doc.markdown().split("\n\n")[:2]
    assert unmarked.splitlines()[0] == "| setting | seeds |" and marked.splitlines()[0] == "| setting | seeds |  |"
    assert marked.splitlines()[-1] == "| 90/10 | 3 | † |"


def test_an_empty_paragraph_leaves_no_blank_line():
    from xling.report.doc import Doc

    doc = Doc()
    doc.h(1, "Study report: mine")
    doc.p("")  # a study without a description
    doc.ul(["Generated today."])
    assert doc.markdown().startswith("# Study report: mine\n\n- Generated today.")


def test_runs_that_differ_in_how_they_were_executed_share_a_law():
    from xling.config import RunConfig, to_dict
    from xling.report.summary import law_group

    def config(**train):
        cfg = to_dict(RunConfig())
        cfg["train"].update(train)
        return cfg

    ladder = law_group(config())
    assert law_group(config(log_every=3, checkpoint_every=20, keep_checkpoints="all", device="cpu")) == ladder
    assert law_group(config(seed=4, data_fraction=0.2)) == ladder  # the mixture's keys
    assert law_group(config(lr=1e-3)) != ladder  # what the run learns from
    scored_otherwise = config()
    scored_otherwise["eval"]["window"] = 64  # perplexities under another protocol are not comparable
    assert law_group(scored_otherwise) != ladder


def test_transfer_at_chance_in_both_settings_does_not_judge_claim_8(tmp_path):
    """Zero-shot accuracy at the majority class in 90/10 and in 50/50: nothing transfers at all, so the claim cannot
    be tested (it was called 'not supported'); above chance, the difference is judged as before."""
    from xling.report.alignment_report import _transfer
    from xling.report.alignment_results import Setting
    from xling.report.doc import Doc

    def setting(p, zero_shot):
        return Setting(f"p{p}", "clone", "clone", p, "", transfers=[
            {"task": "t", "labels": list("abcdefg"), "steps": 5, "majority_baseline": 1 / 7,
             "accuracy": {"EN1": 0.6, "EN2": acc}} for acc in zero_shot])

    at_chance = [setting(0.1, [0.13, 0.15, 0.14]), setting(0.5, [0.15, 0.14, 0.13])]
    (evidence,) = _transfer(Doc(), at_chance, at_chance, tmp_path, paper=False)
    assert evidence.test.status is Status.NOT_TESTED
    assert evidence.line.startswith("zero-shot transfer 90/10 > 50/50: not tested: in neither setting is the "
                                    "zero-shot accuracy significantly above the majority class (0.143; 90/10 0.140 ± ")
    above = [setting(0.1, [0.45, 0.5, 0.55]), setting(0.5, [0.13, 0.15, 0.14])]
    (evidence,) = _transfer(doc := Doc(), above, above, tmp_path, paper=False)
    assert evidence.test.status is Status.SUPPORTED and evidence.line.startswith("zero-shot transfer 90/10 > 50/50: yes")
    assert "Notes of the runs' transfer results" not in doc.markdown()
    # what a run's result says of its task (a clone run of your own text takes English verses) reaches the report
    above[0].transfers[1]["notes"] = ["the run's text is not the Bibles: the task takes its first language to be English"]
    _transfer(doc := Doc(), above, above, tmp_path, paper=False)
    assert ("Notes of the runs' transfer results: the run's text is not the Bibles: the task takes its first "
            "language to be English.") in doc.markdown()
    assert (tmp_path / "transfer-by-p.png").stat().st_size > 1000


def test_a_study_with_a_pinned_budget_trains_and_reports_its_1x(tiny_corpus_dir, tmp_path):
    """train.budget_tokens in a study's base: each run trains data_fraction of it (not of one pass over the corpus),
    the report's lengths count against it and its training row says what 1x is; a run whose .lock links out of it
    fails alone (the study goes on)."""
    from test_study import tiny_study_dict
    from xling.study.runner import run_study
    from xling.study.spec import build_study
    from xling.train.rundir import RunDir

    data = tiny_study_dict(tiny_corpus_dir, name="pinned", seeds=(0,), ps=(0.5,), fractions=(0.25, 0.5, 0.75, 1.0),
                           mix_fraction=1.0)
    data["base"]["train"]["budget_tokens"] = 20 * 8 * 32  # 20 steps of 8 x 32 tokens
    data["one_x"] = 1.0
    study = build_study(data)
    (tmp_path / "victim").write_text("keep")
    linked = study.runs[0].run_dir(tmp_path / "runs")
    linked.mkdir(parents=True)
    (linked / ".lock").symlink_to(tmp_path / "victim")
    counts = run_study(study, tmp_path / "runs", log=lambda *_: None, progress=False)
    assert counts["failed"] == 1 and counts["completed"] == len(study.runs) - 1
    assert (tmp_path / "victim").read_text() == "keep"
    (linked / ".lock").unlink()
    run_study(study, tmp_path / "runs", log=lambda *_: None, progress=False)
    steps = {spec.config["train"]["data_fraction"]: RunDir(spec.run_dir(tmp_path / "runs")).read_info()["steps"]
             for spec in study.runs if spec.group == "ladder"}
    assert steps == {0.25: 5, 0.5: 10, 0.75: 15, 1.0: 20}
    md = write_report(study, tmp_path / "runs", tmp_path / "report")[0].read_text()
    assert "1x = 5120 tokens (train.budget_tokens)" in md and "one pass" not in md.split("| training |")[1][:200]


def test_probes_that_leave_out_long_held_out_documents_are_said_in_the_report():
    """Own parallel test files with documents longer than a probe: those are left out, so the probes are a biased
    sample (it was said in alignment.json's `probes` only)."""
    from xling.report.alignment_report import _left_out_note
    from xling.report.alignment_results import Setting
    from xling.report.doc import Doc

    whole = {"probes": "test files, 14 document-packed sequences of <= 129 tokens"}
    cut = lambda k: dict(whole, probes_left_out={"count": k, "of": 40, "unit": "document"})
    _left_out_note(doc := Doc(), [Setting("p0.5", "real", "disjoint", 0.5, "", alignments=[whole, whole])])
    assert doc.markdown().strip() == ""
    _left_out_note(doc, [Setting("p0.5", "real", "disjoint", 0.5, "", alignments=[cut(26), whole]),
                         Setting("p0.1", "real", "disjoint", 0.1, "", alignments=[cut(30)])])
    assert ("In 2 alignments, 26-30 of the held-out 40 documents are longer than the model's sequence on a side "
            "and are left out of the probes: the longest, so the probes are a biased sample") in doc.markdown()


def test_numbers_too_large_for_a_column_are_written_in_powers_of_ten():
    """A perplexity of 1e308 (a diverged run, or a typo in a CSV for `xling teff`) filled a table cell with 309
    digits."""
    assert fmt(1e308) == "1e+308" and fmt(-2.5e12, ".3f") == "-2.5e+12"
    assert fmt(123456.789) == "123456.79" and fmt(42.0, ".3g") == "42" and fmt(float("inf")) == "inf"
    assert fmt(None) == fmt(float("nan")) == "–"
