"""Text tables for the terminal: the CLI's view of what the library returns."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..report.published import PAPER_GRAD_SEQUENCES
from ..report.stats import fmt


def ppl_table(results: dict[str, dict], title: str) -> str:
    """Per-language perplexity, loss and scored tokens."""
    lines = [title, f"  {'language':<10} {'ppl':>10} {'loss':>8} {'tokens':>10}"]
    for name, r in results.items():
        lines.append(f"  {name:<10} {r['ppl']:>10.2f} {r['loss']:>8.4f} {r['tokens_scored']:>10,}")
    return "\n".join(lines)


def _with_ci(r: dict, key: str, spec: str) -> str:
    lo, hi = r[f"{key}_lo"], r[f"{key}_hi"]
    text = fmt(r[key], spec)
    if math.isnan(lo) or math.isnan(hi):
        return text
    return f"{text} [{fmt(lo, spec)}, {fmt(hi, spec)}]"


def _range(r: dict, key: str, spec: str) -> str:
    lo, hi = r.get(f"{key}_lo", math.nan), r.get(f"{key}_hi", math.nan)
    return "-" if math.isnan(lo) or math.isnan(hi) else f"[{fmt(lo, spec)}, {fmt(hi, spec)}]"


def efficiency_table(rows: Sequence[dict]) -> str:
    """MLPE, MLTE and TEff with intervals, one row per run and language; rows with a warning are marked '!'."""
    forms = ["form"] if any("form" in r for r in rows) else []  # --form both: a column says which
    profile = any("teff_profile_lo" in r for r in rows)  # (--no-profile: none)
    header = ["run", "language", *forms, "fraction", "ppl", "mlpe", "mlte", "teff",
              *["teff (profile likelihood)"] * profile, ""]
    body = [
        [
            str(r["run"]), str(r["language"]), *(r[f] for f in forms), fmt(r["fraction"], ".3g"), fmt(r["ppl"], ".2f"),
            _with_ci(r, "mlpe", ".2f"), _with_ci(r, "mlte", ".3f"), _with_ci(r, "teff", ".2f"),
            *[_range(r, "teff_profile", ".2f")] * profile, "!" if r.get("warning") else "",
        ]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body])


def alignment_table(results: dict[str, dict]) -> str:
    """Side-by-side per-layer table of several runs' alignment results ({label: result})."""
    labels = list(results)
    width = max(9, *(len(s) + 1 for s in labels))
    title_cell = lambda title: f"  {title:<28}"
    head = lambda title: title_cell(title) + "".join(f"{s:>{width}}" for s in labels)
    fmt = lambda v: f"{v:>{width}.3f}" if v is not None and np.isfinite(v) else f"{'-':>{width}}"
    pairs = {label: " vs ".join(r["languages"]) for label, r in results.items()}
    title = (f"alignment {next(iter(pairs.values()))}" if len(set(pairs.values())) == 1
             else "alignment " + "; ".join(f"{label}: {pair}" for label, pair in pairs.items()))
    lines = [title, head("hidden cosine (paper's)")]
    n_layers = max(len(r["hidden"]["layers"]) for r in results.values())
    for layer in range(n_layers):
        vals = [r["hidden"]["layers"][layer] if layer < len(r["hidden"]["layers"]) else None for r in results.values()]
        lines.append(title_cell(f"layer {layer + 1}") + "".join(fmt(v) for v in vals))
    beyond = lambda name: lambda r: r["hidden"][name]["mean"] if name in r["hidden"] else None
    rows = [("mean over layers", lambda r: r["hidden"]["mean"]),
            ("shuffled baseline (mean)", lambda r: float(np.nanmean(r["hidden"]["shuffled_baseline"]))),
            ("centred, mean over layers", beyond("centred")),
            ("centred, shuffled pairs", lambda r: r["hidden"].get("centred", {}).get("shuffled_baseline", {}).get("mean")),
            ("cka, mean over layers", beyond("cka")),
            ("retrieval, mean over layers", beyond("retrieval")),
            ("retrieval, chance (1/N)", lambda r: r["hidden"].get("retrieval", {}).get("chance"))]
    rows += [("gradient cosine, block mean", lambda r: r["gradient"]["block_mean"] if "gradient" in r else None),
             ("  without the key bias", lambda r: r.get("gradient", {}).get("block_mean_without_key_bias"))]
    for group in ("embeddings", "word2vec"):
        for kind in ("input", "output"):
            for stat in ("clone_pairs", "all_pairs"):
                rows.append((f"{'w2v' if group == 'word2vec' else 'emb'} {kind} {stat.replace('_', '-')}",
                             lambda r, g=group, k=kind, s=stat: r[g][k][s] if g in r else None))
            for stat in ("clone_pairs", "all_pairs") if group == "embeddings" else ():  # (beyond the paper)
                rows.append((f"  seen only: {stat.replace('_', '-')}",
                             lambda r, k=kind, s=stat: r.get("embeddings", {}).get(k, {}).get("seen", {}).get(s)))
    for title, get in rows:
        vals = [get(r) for r in results.values()]
        if any(v is not None for v in vals):
            lines.append(title_cell(title) + "".join(fmt(v) for v in vals))
    graded = {label: r["gradient"] for label, r in results.items() if "gradient" in r}
    if graded:
        lines.append("  gradients: " + "; ".join(f"{label} {g.get('precision', 'fp32')} over {g['sequences']} sequences"
                                                 + (f" ({g['nonfinite']} not finite, left out)" if g.get("nonfinite")
                                                    else "") for label, g in graded.items())
                     + f" (the authors': fp16 autocast over {PAPER_GRAD_SEQUENCES} on a GPU; on a CPU their code "
                       "takes fp32)")
    trained = {label: r["word2vec"].get("settings", {}) for label, r in results.items() if "word2vec" in r}
    if any("embeddings" in r for r in results.values()):
        lines.append(f"  {'emb, w2v' if trained else 'emb'}: alignment is the clone-pairs value above all-pairs (an "
                     "all-pairs value near 1: the vectors share one direction, as after little training); the paper's "
                     "means are over every clone pair; 'seen only': the tokens of the training text (a token it never "
                     "has keeps alike output rows and random input rows)")
    if trained:
        lines.append("  w2v: CBOW on each run's whole training stream, " + "; ".join(
            f"{label} {t.get('sentences', 0):,} sequences × {t.get('epochs', 1)} pass{'es' * (t.get('epochs', 1) != 1)}"
            for label, t in trained.items()))
    return "\n".join(lines)


def training_table(run_dir, results: list[dict]) -> str:
    """`xling align --checkpoints all`: the alignment measures of one run at each kept checkpoint."""
    pair = " vs ".join(results[0]["languages"]) if results else ""
    lines = [f"alignment over training, {run_dir}" + (f", {pair}" if pair else ""),
             f"  {'step':>8} {'tokens':>12} {'raw cosine':>11} {'centred':>9} {'cka':>7} {'retrieval':>10}"]
    for r in results:
        h = r["hidden"]
        centred, cka, retrieval = (h[name]["mean"] if name in h else float("nan") for name in ("centred", "cka", "retrieval"))
        lines.append(f"  {r['step']:>8} {r['tokens'] or 0:>12,} {h['mean']:>11.3f} {centred:>9.3f} {cka:>7.3f} "
                     f"{retrieval:>10.3f}")
    return "\n".join(lines)


def transfer_table(result: dict) -> str:
    lines = [f"{result['task']}: fine-tuned in {result['train_language']} on {result['train_examples']} examples, "
             f"{result['steps']} steps (train accuracy {result['train_accuracy']:.3f}); "
             f"majority baseline {result['majority_baseline']:.3f}",
             f"  {'language':<10} {'accuracy':>9} {'examples':>9}"]
    for name, acc in result["accuracy"].items():
        lines.append(f"  {name:<10} {acc:>9.3f} {result['eval_examples'][name]:>9}")
    return "\n".join(lines)


def status_table(study, rows: list[dict]) -> str:
    """`xling study status`: one line per run, then the counts per state."""
    title = f"study {study.name}: {study.description.splitlines()[0] if study.description else ''}".rstrip()
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return "\n".join([title, *_progress_lines(rows, "id", "a rerun only evaluates"),
                      "  " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + f" (of {len(rows)})"])


def runs_status_table(rows: list[dict]) -> str:
    """`xling status RUN_DIR ...`: one line per run directory (its rows name it under "path"), then what goes on."""
    lines = _progress_lines(rows, "path", "a resume finishes it")
    interrupted = [r for r in rows if r["state"] == "interrupted"]
    if any(not r["study"] for r in interrupted):
        lines.append("  an interrupted run goes on with `xling train RUN_DIR --resume`")
    from ..study.spec import available_studies  # (here: it reads the study folders, which few tables need)

    found = available_studies()
    for study in sorted({r["study"] for r in rows if r["study"]}):  # (its runs not started have no directory yet)
        target = study if study in found else "FILE"  # (a study of a YAML file elsewhere, or a dict)
        lines.append(f"  study {study}: `xling study status {target}` lists all its runs, `xling study run {target}` "
                     "trains what is missing (both with its --root" + (", FILE its YAML file)" if target == "FILE" else ")"))
    if any(r["state"] == "completed" and not r["evaluated"] for r in rows):
        lines.append("  a completed run without a test evaluation (trained with --no-eval) gets one with `xling eval RUN_DIR`")
    return "\n".join(lines)


def _progress_lines(rows: list[dict], key: str, after_training: str) -> list[str]:
    """A header and one line per run: its `key` (id or path), state and progress (what a resume would do);
    `after_training`: what a run stopped in its final evaluation needs."""
    width = max([len(r[key]) for r in rows] + [3])
    lines = [f"  {'run':<{width}}  {'state':<11}  progress"]
    for r in rows:
        prog = f"{r['step']}/{r['steps']}" if r["steps"] else "-"
        if r["state"] == "interrupted" and r["steps"] and r.get("checkpoint") == r["steps"]:
            prog += f" (training done, stopped in its evaluation: {after_training})"
        elif r["state"] == "interrupted" and r.get("checkpoint", r["step"]) != r["step"]:
            prog += (f" (resumes from step {r['checkpoint']}, its last checkpoint)" if r["checkpoint"] else
                     " (starts again: no checkpoint yet)")
        elif r["state"] == "completed" and not r.get("evaluated", True):
            prog += " (no test evaluation)"
        elif r.get("twin"):
            prog += f" (complete as {r['twin']}: a study run copies it)"
        extra = f"  {r['error']}" if r["state"] in ("failed", "damaged") else ""
        lines.append(f"  {r[key]:<{width}}  {r['state']:<11}  {prog}{extra}")
    return lines


def bench_table(result: dict) -> str:
    """`xling bench`: the step's tokens/s, MFU, data path and matmul shares, and Hugging Face beside it."""
    s, m, x = result["shape"], result["machine"], result["xling"]
    where = m.get("gpu") or f"{m['cpu']}, {m['torch_threads']} thread{'' if m['torch_threads'] == 1 else 's'}"
    lines = [(f"{s['preset']}: {s['n_layers']} layers, d {s['d_model']}, {s['n_heads']} heads, MLP {s['d_mlp']}, "
              f"seq {s['seq_len']}, batch {s['batch']}, vocab {s['vocab']:,} ({s['parameters'] / 1e6:.1f}M parameters)"),
             (f"device: {where}; torch {m['torch']}, load average {m['load_average']} -> {m['load_average_end']}, "
              f"OpenMP wait {m['openmp_wait'] or 'default'}"),
             "", f"  {'':<22} {'tokens/s':>10} {'step ms':>9} {'MFU':>7}"]
    nominal = result["nominal_peak"]

    def row(name, r):
        extra = f"  ({100 * r['mfu_nominal']:.1f} % of nominal)" if nominal else ""
        return f"  {name:<22} {r['tokens_per_s']:>10,.0f} {r['step_ms']:>9.1f} {100 * r['mfu']:>6.1f}%{extra}"

    lines.append(row(f"xling ({x['precision']})", x))
    lines.append(f"  {'  data path':<22} {'':>10} {x['data_ms']:>9.2f} {'':>7}  ({100 * x['data_share']:.2f} % of the step)")
    lines.append(f"  {'  its matmuls alone':<22} {'':>10} {x['matmuls_ms']:>9.1f} {'':>7}  "
                 f"({100 * x['matmul_share']:.0f} % of the step)")
    if "exponentials_ms" in x:
        lines.append(f"  {'  its exponentials':<22} {'':>10} {x['exponentials_ms']:>9.1f} {'':>7}  "
                     f"({x['exponentials'] / 1e6:.1f} M: the softmaxes of the loss and attention)")
    hf = result["hf"]
    if hf and "error" in hf:
        lines.append(f"  Hugging Face GPT-2: skipped ({hf['error']})")
    elif hf:
        for precision, r in hf.items():
            lines.append(row(f"HF GPT-2 ({precision})", r))
        lines.append(f"  xling / HF (faster, {result['hf_best']}): {result['ratio']:.2f}x; ceiling "
                     f"{result['ratio_ceiling']:.2f}x (HF step / xling's matmuls alone)")
        if "ratio_attainable" in result:
            lines.append(f"  attainable with PyTorch's exp: {result['ratio_attainable']:.2f}x "
                         "(HF step / (matmuls + exponentials), every other op free)")
    lines.append("")
    for precision, p in result["peaks"].items():
        shape = "x".join(map(str, p["shape"]))
        lines.append(f"  {precision} GEMM peak ({shape}): {p['flops'] / 1e9:,.0f} GFLOP/s "
                     f"(median over the timed rounds {p['median_flops'] / 1e9:,.0f})")
    if nominal:
        lines.append(f"  nominal peak: {nominal / 1e12:,.0f} TFLOP/s")
    if "precision_auto" in result:
        lines.append(f"  precision auto here: {result['precision_auto']['why']}")
    for precision, why in result.get("skipped_precisions", {}).items():
        lines.append(f"  {precision} not timed: {why}")
    if x["precision"] in result.get("skipped_precisions", {}):
        lines.append(f"  note: xling ran in {x['precision']} because the config asks for it; this device does not run it natively")
    lines.append(f"  MFU = matmul FLOPs only ({result['matmul_flops_per_token'] / 1e6:.2f} M per token) x tokens/s "
                 "/ the GEMM peak of the row's own precision")
    return "\n".join(lines)
