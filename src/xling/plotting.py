"""Matplotlib without a screen, and PNG files that are never half-written."""

from __future__ import annotations

import io
from pathlib import Path

from .fsio import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int = 120, crop: bool = True) -> str:
    """Render to memory, close the figure, then write atomically; returns the file's name.

    crop: cut the canvas to what is drawn; else lay the figure out within its own size."""
    buffer = io.BytesIO()
    if not crop:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if crop else None)
    pyplot().close(fig)
    with atomic_write(Path(path)) as f:
        f.write(buffer.getvalue())
    return Path(path).name
