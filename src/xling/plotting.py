"""Matplotlib without a screen, and PNG files that are never half-written (with SVG copies for papers
where a report asks for them)."""

from __future__ import annotations

import contextlib
import contextvars
import io
from collections.abc import Iterator
from pathlib import Path

from .fsio import atomic_write

_SVG_COPIES = contextvars.ContextVar("svg_copies", default=False)


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def svg_copies() -> Iterator[None]:
    """Within this block every `save_png` also writes the figure as SVG beside the PNG (same name,
    .svg; text drawn as paths, so it looks the same everywhere): vector figures for papers."""
    token = _SVG_COPIES.set(True)
    try:
        yield
    finally:
        _SVG_COPIES.reset(token)


def save_png(fig, path: Path, dpi: int = 120, crop: bool = True) -> str:
    """Render to memory, close the figure, then write atomically; returns the file's name.

    crop: cut the canvas to what is drawn; else lay the figure out within its own size."""
    buffers = {"png": io.BytesIO()}
    if _SVG_COPIES.get():
        buffers["svg"] = io.BytesIO()
    if not crop:
        fig.tight_layout()
    for fmt, buffer in buffers.items():
        # metadata Date None: the same figure gives the same SVG bytes
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight" if crop else None,
                    **({"metadata": {"Date": None}} if fmt == "svg" else {}))
    pyplot().close(fig)
    for fmt, buffer in buffers.items():
        with atomic_write(Path(path) if fmt == "png" else Path(path).with_suffix(".svg")) as f:
            f.write(buffer.getvalue())
    return Path(path).name
