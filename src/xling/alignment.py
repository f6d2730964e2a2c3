"""How aligned are two languages inside a trained run (PAPER.md section 4)?

Three views, each computed on held-out parallel probes (text no language saw in training):
- hidden states: per layer, the cosine between the two languages' hidden vectors of the same
  text. Clones align position by position. A real pair has different tokenizations, so each
  sequence pair is aligned by a maximum-weight token matching (Hungarian algorithm via scipy)
  on the layer-averaged cosine matrix, and each layer is scored over the matched pairs.
- gradients: per parameter tensor, the cosine between the loss gradients of the two versions
  of a sequence (would a step on one language also move the other?).
- embeddings (clones only): cos(E[i], E[clone(i)]) of input and output embeddings against the
  mean over all pairs, also binned by training frequency (log bins, 4 per decade).

`align_run` writes RUN_DIR/alignment/alignment.json and three PNG figures.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .errors import XlingError
from .fsio import atomic_write, atomic_write_json
from .languages import PAD_ID

BINS_PER_DECADE = 4

# --------------------------------------------------------------------------- probes


@dataclass
class Probes:
    """Parallel probe sequences in two languages (1-D model-id tensors: inputs plus one target).

    `positional`: the two sides are the same text under two id tables, so position t of one
    side is position t of the other (clones); otherwise tokens are aligned by matching.
    """

    a: list[torch.Tensor]
    b: list[torch.Tensor]
    positional: bool
    source: str  # where the text came from, for the report

    def __len__(self) -> int:
        return len(self.a)


def probe_split(corpus) -> str:
    """The Bible's probe books (never in any split); a local corpus's test split."""
    return "probe" if corpus.name == "bible" else "test"


def clone_probes(setup, lang_a: int, lang_b: int, seq_len: int, max_sequences: int = 500) -> Probes:
    """Held-out windows of the shared text source, written in both languages."""
    source = setup.source_of_language[lang_a]
    split = probe_split(setup.corpora[source])
    base = torch.from_numpy(setup.tokens(source, split).astype(np.int64))
    n = min(max_sequences, (len(base) - 1) // seq_len)
    if n < 1:
        raise XlingError(f"the {split} split has fewer than {seq_len + 1} tokens: no alignment probes; "
                         "use a corpus with more held-out text")
    windows = base[torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)]
    a, b = setup.table[lang_a][windows], setup.table[lang_b][windows]
    return Probes(list(a), list(b), positional=True, source=f"{split} split, {n} windows of {seq_len} tokens")


def pack_pairs(pairs_a: list[list[int]], pairs_b: list[list[int]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Pack consecutive aligned segments into sequence pairs, each side at most `max_len` ids.

    A pair is closed when adding the next segment would overflow either side; a segment that
    alone is longer than `max_len` on either side is dropped (it cannot fit any sequence).
    """
    packed, cur_a, cur_b = [], [], []
    for seg_a, seg_b in zip(pairs_a, pairs_b):
        if len(seg_a) > max_len or len(seg_b) > max_len or not seg_a or not seg_b:
            continue
        if len(cur_a) + len(seg_a) > max_len or len(cur_b) + len(seg_b) > max_len:
            packed.append((cur_a, cur_b))
            cur_a, cur_b = [], []
        cur_a, cur_b = cur_a + seg_a, cur_b + seg_b
    if cur_a:
        packed.append((cur_a, cur_b))
    return packed


def parallel_probes(setup, lang_a: int, lang_b: int, seq_len: int, max_sequences: int = 500) -> Probes:
    """The held-out Bible books in both languages, verse-aligned and packed into sequences."""
    from .corpora import PROBE_BOOKS, parallel_verses

    corpus_a = setup.corpora[setup.source_of_language[lang_a]]
    corpus_b = setup.corpora[setup.source_of_language[lang_b]]
    if corpus_a.name != "bible" or corpus_b.name != "bible":
        raise XlingError("alignment of a real language pair needs parallel text: both corpora must be "
                         "Bible translations (corpus.name: bible)")
    verses = parallel_verses(corpus_a, corpus_b, PROBE_BOOKS)
    sides = []
    for lang, col in ((lang_a, 1), (lang_b, 2)):
        tokenizer = setup.tokenizers[setup.source_of_language[lang]]
        row = setup.table[lang]
        sides.append([row[torch.tensor(ids, dtype=torch.long)].tolist() for ids in
                      tokenizer.encode([v[col] for v in verses])])
    packed = pack_pairs(sides[0], sides[1], seq_len + 1)[:max_sequences]
    if not packed:
        raise XlingError("no parallel probe sequence fits the model's seq_len: use a longer model.seq_len")
    to_tensor = lambda ids: torch.tensor(ids, dtype=torch.long)
    return Probes([to_tensor(a) for a, _ in packed], [to_tensor(b) for _, b in packed], positional=False,
                  source=f"probe books (Luke, Acts), {len(packed)} verse-packed sequences of <= {seq_len + 1} tokens")


def make_probes(cfg, setup, lang_a: int, lang_b: int, max_sequences: int = 500) -> Probes:
    seq_len = cfg.model.seq_len
    if setup.source_of_language[lang_a] == setup.source_of_language[lang_b]:
        return clone_probes(setup, lang_a, lang_b, seq_len, max_sequences)
    return parallel_probes(setup, lang_a, lang_b, seq_len, max_sequences)


def pad_batch(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with the pad id; causal attention keeps the padding from touching real tokens."""
    lengths = torch.tensor([len(s) for s in seqs])
    batch = torch.full((len(seqs), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, :len(s)] = s
    return batch, lengths


# --------------------------------------------------------------------------- hidden states


def max_weight_matching(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight full bipartite matching of a score matrix [n_a, n_b]: (rows, cols) of the pairs.

    Every token of the shorter side is matched, as with the networkx
    `minimum_weight_full_matching` on negated scores that the paper's authors used; the
    Hungarian algorithm (scipy) solves it directly from the matrix, without building a graph.
    """
    return linear_sum_assignment(scores, maximize=True)


@torch.no_grad()
def _states(model, seqs: list[torch.Tensor], device, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-normalised hidden states [L, B, T, D] (fp32) of a batch of inputs, and their lengths."""
    ids, lengths = pad_batch([s[:-1] for s in seqs])
    with autocast():
        states = model.hidden_states(ids.to(device))
    return F.normalize(torch.stack(states).float(), dim=-1), lengths


def hidden_similarity(model, probes: Probes, device, autocast, batch_size: int = 16) -> dict:
    """Per-layer cosine of the two languages' hidden states, averaged over probe sequences.

    Also a shuffled baseline (each side paired with the *next* sequence's other side), which
    shows how similar unrelated text looks in that layer (anisotropy).
    """
    per_seq, baseline = [], []
    for start in range(0, len(probes), batch_size):
        ha, len_a = _states(model, probes.a[start:start + batch_size], device, autocast)
        hb, len_b = _states(model, probes.b[start:start + batch_size], device, autocast)
        n = ha.shape[1]
        pairings = [(per_seq, torch.arange(n))] + ([(baseline, torch.arange(1, n + 1) % n)] if n > 1 else [])
        if probes.positional:
            for store, other in pairings:
                cos = (ha * hb[:, other]).sum(-1)  # [L, B, T]
                store.extend(cos[:, i, :len_a[i]].mean(-1) for i in range(n))
            continue
        for i in range(n):
            for store, other in pairings:
                j = int(other[i])
                cos = ha[:, i, :len_a[i]] @ hb[:, j, :len_b[j]].transpose(1, 2)  # [L, Ta, Tb]
                rows, cols = max_weight_matching(cos.mean(0).cpu().numpy())
                store.append(cos[:, rows, cols].mean(-1))
    layers = torch.stack(per_seq).nanmean(0).tolist()
    return {"method": "positional" if probes.positional else "matching", "sequences": len(probes),
            "layers": layers, "mean": float(np.mean(layers)),
            "shuffled_baseline": torch.stack(baseline).nanmean(0).tolist() if baseline else [float("nan")] * len(layers)}


# --------------------------------------------------------------------------- gradients

# The key bias is left out: adding a constant to every key's score leaves the softmax unchanged,
# so its gradient is zero in exact arithmetic and its "cosine" would be the cosine of rounding noise.
BLOCK_TENSORS = ("ln_1.weight", "ln_1.bias", "q.weight", "q.bias", "k.weight", "v.weight", "v.bias",
                 "o.weight", "o.bias", "ln_2.weight", "ln_2.bias", "fc.weight", "fc.bias", "proj.weight", "proj.bias")


def _gradients(model, seq: torch.Tensor, device) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    seq = seq.to(device)
    model.loss(seq[None, :-1], seq[None, 1:]).backward()
    return {name: p.grad.detach().flatten().clone() for name, p in model.named_parameters() if p.grad is not None}


def gradient_similarity(model, probes: Probes, device, max_sequences: int = 100) -> dict:
    """Per-tensor cosine between the loss gradients of the two versions of each probe sequence.

    Gradients are taken in fp32 (no autocast): fp16 gradients would need loss scaling and
    their rounding would blur small cosines. Block tensors (attention, MLP, LayerNorm of each
    layer) are what the paper reports; embedding and output rows of clones differ by
    construction, so those tensors are listed apart under "other".
    """
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    n = min(max_sequences, len(probes))
    for i in range(n):
        ga, gb = _gradients(model, probes.a[i], device), _gradients(model, probes.b[i], device)
        for name in ga.keys() & gb.keys():
            sums.setdefault(name, []).append(float(F.cosine_similarity(ga[name], gb[name], dim=0)))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    mean = {name: float(np.mean(v)) for name, v in sums.items()}
    n_layers = len(model.blocks)
    table = {t: [mean.get(f"blocks.{layer}.{t}", float("nan")) for layer in range(n_layers)] for t in BLOCK_TENSORS}
    block_values = [v for row in table.values() for v in row if np.isfinite(v)]
    other = {name: v for name, v in sorted(mean.items()) if not name.startswith("blocks.")}
    return {"sequences": n, "tensors": table, "block_mean": float(np.mean(block_values)) if block_values else float("nan"),
            "other": other}


# --------------------------------------------------------------------------- embeddings


def clone_pairs(table: torch.Tensor, lang_a: int, lang_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base ids, model ids in a, model ids in b) of every cloned id: anchors and pad are skipped."""
    ids_a, ids_b = table[lang_a].numpy(), table[lang_b].numpy()
    base = np.arange(len(ids_a))
    keep = (ids_a != ids_b) & (base != PAD_ID)
    return base[keep], ids_a[keep], ids_b[keep]


def pair_cosines(vectors: torch.Tensor, ids_a: np.ndarray, ids_b: np.ndarray) -> np.ndarray:
    """cos(vectors[a_i], vectors[b_i]) for every pair i."""
    va, vb = vectors[torch.as_tensor(ids_a)].float(), vectors[torch.as_tensor(ids_b)].float()
    return F.cosine_similarity(va, vb, dim=-1).numpy().astype(np.float64)


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """Exact mean cosine over all pairs i != j, in O(n d): sum_ij u_i.u_j = |sum_i u_i|^2."""
    n = len(vectors)
    if n < 2:
        return float("nan")
    unit = F.normalize(vectors.double(), dim=-1)
    total = unit.sum(0)
    return float((total @ total - (unit * unit).sum()) / (n * (n - 1)))


def frequency_bins(counts: np.ndarray, values: dict[str, np.ndarray], per_decade: int = BINS_PER_DECADE) -> list[dict]:
    """Mean of each value array per log-frequency bin [10^(k/per_decade), 10^((k+1)/per_decade)).

    Tokens never seen in training get their own bin (lo = hi = 0). Empty bins are left out.
    """
    counts = np.asarray(counts)
    top = int(np.ceil(per_decade * np.log10(max(int(counts.max(initial=1)), 1)))) + 2
    edges = 10.0 ** (np.arange(top + 1) / per_decade)
    index = np.where(counts > 0, np.searchsorted(edges, counts, side="right") - 1, -1)
    bins = []
    for k in np.unique(index):
        sel = index == k
        lo, hi = (0.0, 0.0) if k < 0 else (float(edges[k]), float(edges[k + 1]))
        bins.append({"lo": lo, "hi": hi, "n": int(sel.sum()),
                     **{name: float(np.mean(v[sel])) for name, v in values.items()}})
    return bins


def embedding_similarity(matrices: dict[str, torch.Tensor], table: torch.Tensor, lang_a: int, lang_b: int,
                         counts: np.ndarray, present: np.ndarray | None = None) -> dict:
    """Clone-pair cosine of each embedding matrix vs its all-pairs baseline, overall and by frequency.

    `counts[base_id]` is the training frequency; `present[model_id]` (optional) marks rows that
    exist at all (word2vec has no vector for a token it never saw).
    """
    base, ids_a, ids_b = clone_pairs(table, lang_a, lang_b)
    if present is not None:
        keep = present[ids_a] & present[ids_b]
        base, ids_a, ids_b = base[keep], ids_a[keep], ids_b[keep]
    if len(base) == 0:
        raise XlingError("the two languages share every id (frac_clone 0): there are no clone pairs to compare")
    out, per_token = {"pairs": len(base)}, {}
    for name, matrix in matrices.items():
        cos = pair_cosines(matrix, ids_a, ids_b)
        per_token[name] = cos
        both = matrix[torch.as_tensor(np.concatenate([ids_a, ids_b]))]
        out[name] = {"clone_pairs": float(cos.mean()), "all_pairs": mean_pairwise_cosine(both)}
    out["by_frequency"] = frequency_bins(counts[base], per_token)
    return out


def training_counts(setup, source: int = 0) -> np.ndarray:
    """How often each base id occurs in a text source's training split."""
    width = setup.table.shape[1]
    return np.bincount(np.asarray(setup.tokens(source, "train")), minlength=width)[:width]


# --------------------------------------------------------------------------- figures


def save_png(fig, path: Path) -> None:
    """Render to memory, then write atomically (a reader never sees half a PNG)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_hidden(results: dict[str, dict], path: Path) -> None:
    """Per-layer hidden-state cosine of one or more runs ({label: alignment.json content})."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, res in results.items():
        layers = res["hidden"]["layers"]
        x = range(1, len(layers) + 1)
        line, = ax.plot(x, layers, marker="o", label=label)
        ax.plot(x, res["hidden"]["shuffled_baseline"], ls=":", color=line.get_color())
    ax.set_xticks(range(1, max(len(r["hidden"]["layers"]) for r in results.values()) + 1))
    ax.set(xlabel="layer", ylabel="cosine similarity", title="hidden states (dotted: shuffled pairs)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend()
    save_png(fig, path)


def plot_gradients(grad: dict, path: Path, title: str = "") -> None:
    plt = pyplot()
    names = list(grad["tensors"])
    data = np.array([grad["tensors"][n] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * data.shape[1], 5))
    im = ax.imshow(data, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xticks(range(data.shape[1]), [str(i + 1) for i in range(data.shape[1])])
    for (r, c), v in np.ndenumerate(data):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6)
    ax.set(xlabel="layer", title=title or f"gradient cosine (block mean {grad['block_mean']:.3f})")
    fig.colorbar(im, ax=ax, shrink=0.6)
    save_png(fig, path)


def plot_embeddings(result: dict, path: Path) -> None:
    """Clone-pair cosine by training frequency, input and output (and word2vec when present)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sources = [("model", result.get("embeddings"), "-"), ("word2vec", result.get("word2vec"), "--")]
    for label, emb, style in sources:
        if not emb:
            continue
        bins = [b for b in emb["by_frequency"] if b["lo"] > 0]
        x = [np.sqrt(b["lo"] * b["hi"]) for b in bins]
        for kind in ("input", "output"):
            line, = ax.plot(x, [b[kind] for b in bins], style, marker=".", label=f"{label} {kind}")
            ax.axhline(emb[kind]["all_pairs"], color=line.get_color(), lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set(xlabel="training frequency of the base token", ylabel="clone-pair cosine",
           title="embedding similarity (dotted: all-pairs baseline)")
    ax.legend(fontsize=7)
    save_png(fig, path)


# --------------------------------------------------------------------------- the command


def _language_index(names: list[str], name: str | None, default: int) -> int:
    if name is None:
        return default
    if name not in names:
        raise XlingError(f"unknown language '{name}': this run has {', '.join(names)}")
    return names.index(name)


def align_run(run_dir, pair: tuple[str, str] | None = None, sequences: int = 500, grad_sequences: int = 100,
              batch_size: int = 16, word2vec: dict | None = None, device: str = "auto", figures: bool = True,
              cache_dir: Path | None = None) -> dict:
    """All alignment metrics of one run; writes RUN_DIR/alignment/alignment.json (+ PNGs).

    `word2vec`: None skips the control; a dict of knobs (possibly empty) runs it.
    """
    from .train import load_session

    if sequences < 1 or grad_sequences < 0 or batch_size < 1:
        raise XlingError("--sequences and --batch-size must be >= 1 and --grad-sequences >= 0")
    session = load_session(run_dir, device=device, cache_dir=cache_dir)
    setup, model, cfg = session.setup, session.model, session.cfg
    a = _language_index(setup.names, pair[0] if pair else None, 0)
    b = _language_index(setup.names, pair[1] if pair else None, 1)
    if a == b:
        raise XlingError("--pair needs two different languages")
    timings, t0 = {}, time.perf_counter()
    probes = make_probes(cfg, setup, a, b, sequences)
    result = {"run": str(session.run.path), "languages": [setup.names[a], setup.names[b]],
              "kind": cfg.languages.kind, "p": cfg.languages.p, "schedule": cfg.languages.schedule,
              "step": session.run.read_info().get("step"), "probes": probes.source}
    result["hidden"] = hidden_similarity(model, probes, session.device, session.autocast, batch_size)
    timings["hidden"], t0 = time.perf_counter() - t0, time.perf_counter()
    if grad_sequences:
        result["gradient"] = gradient_similarity(model, probes, session.device, grad_sequences)
        timings["gradient"], t0 = time.perf_counter() - t0, time.perf_counter()
    clones = setup.source_of_language[a] == setup.source_of_language[b] and len(clone_pairs(setup.table, a, b)[0])
    if clones:
        counts = training_counts(setup, setup.source_of_language[a])
        matrices = {"input": model.tok_emb.weight.detach().cpu(), "output": model.head.weight.detach().cpu()}
        result["embeddings"] = embedding_similarity(matrices, setup.table, a, b, counts)
        timings["embeddings"], t0 = time.perf_counter() - t0, time.perf_counter()
        if word2vec is not None:
            from .word2vec import word2vec_control

            result["word2vec"] = word2vec_control(cfg, setup, a, b, counts, **word2vec)
            timings["word2vec"] = time.perf_counter() - t0
    result["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    out = session.run.path / "alignment"
    atomic_write_json(out / "alignment.json", result)
    if figures:
        label = session.run.path.name
        plot_hidden({label: result}, out / "hidden.png")
        if "gradient" in result:
            plot_gradients(result["gradient"], out / "gradient.png", f"{label}: gradient cosine "
                           f"(block mean {result['gradient']['block_mean']:.3f})")
        if clones:
            plot_embeddings(result, out / "embeddings.png")
    return result


def format_comparison(results: dict[str, dict]) -> str:
    """Side-by-side per-layer table of several runs' alignment results ({label: result})."""
    labels = list(results)
    width = max(9, *(len(s) + 1 for s in labels))
    head = lambda title: f"  {title:<26}" + "".join(f"{s:>{width}}" for s in labels)
    fmt = lambda v: f"{v:>{width}.3f}" if v is not None and np.isfinite(v) else f"{'-':>{width}}"
    first = next(iter(results.values()))
    lines = [f"alignment {first['languages'][0]} vs {first['languages'][1]}", head("hidden-state cosine")]
    n_layers = max(len(r["hidden"]["layers"]) for r in results.values())
    for layer in range(n_layers):
        vals = [r["hidden"]["layers"][layer] if layer < len(r["hidden"]["layers"]) else None for r in results.values()]
        lines.append(f"  {'layer ' + str(layer + 1):<26}" + "".join(fmt(v) for v in vals))
    rows = [("mean over layers", lambda r: r["hidden"]["mean"]),
            ("shuffled baseline (mean)", lambda r: float(np.nanmean(r["hidden"]["shuffled_baseline"]))),
            ("gradient cosine, block mean", lambda r: r["gradient"]["block_mean"] if "gradient" in r else None)]
    for group in ("embeddings", "word2vec"):
        for kind in ("input", "output"):
            for stat in ("clone_pairs", "all_pairs"):
                rows.append((f"{'w2v' if group == 'word2vec' else 'emb'} {kind} {stat.replace('_', '-')}",
                             lambda r, g=group, k=kind, s=stat: r[g][k][s] if g in r else None))
    for title, get in rows:
        vals = [get(r) for r in results.values()]
        if any(v is not None for v in vals):
            lines.append(f"  {title:<26}" + "".join(fmt(v) for v in vals))
    return "\n".join(lines)


def align_command(run_dirs: list[str], reuse: bool = False, figure: str | None = None, **options) -> int:
    """`xling align RUN [RUN ...]`: compute (or, with `reuse`, read) each run's alignment and print
    the runs side by side; `figure` writes one per-layer plot of all runs."""
    from .runs import RunDir, read_json

    computed = []
    for run_dir in run_dirs:
        path = RunDir(run_dir).require().path / "alignment" / "alignment.json"
        start, read = time.perf_counter(), reuse and path.is_file()
        computed.append(read_json(path) if read else align_run(run_dir, **options))
        print(f"{run_dir}: {'read' if read else 'wrote'} {path} ({time.perf_counter() - start:.1f} s)")
    labels = [Path(d).name for d in run_dirs]
    if len(set(labels)) < len(labels):  # same folder name in different places: use the paths
        labels = [str(d) for d in run_dirs]
    results = dict(zip(labels, computed))
    print(format_comparison(results))
    if figure:
        plot_hidden(results, Path(figure))
    return 0
