"""Figures of one run's alignment: hidden states per layer, the gradient heatmap, embeddings by frequency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import pyplot, save_png


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
            baseline = [b.get(f"{kind}_all_pairs", emb[kind]["all_pairs"]) for b in bins]  # overall: before 11-28
            ax.plot(x, [np.nan if v is None else v for v in baseline], ":", color=line.get_color(), lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="training frequency of the base token", ylabel="clone-pair cosine",
           title="embedding similarity (dotted: the bin's other pairs)")
    ax.legend(fontsize=7)
    save_png(fig, path)
