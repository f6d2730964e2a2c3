"""A model's shape: the paper's sizes (its section 3) and CPU sizes as presets, resolved against a run's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import XlingError


@dataclass(frozen=True)
class ModelDims:
    """A model's shape, resolved from a ModelConfig and the run's vocabulary."""

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    seq_len: int
    vocab_size: int
    d_head: int = 0  # 0: d_model // n_heads

    def __post_init__(self):
        if not self.d_head:
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)

    @property
    def d_attn(self) -> int:
        """The width Q, K and V project to (and O projects back from)."""
        return self.n_heads * self.d_head

    def num_parameters(self) -> int:
        """The model's parameter count: embeddings, blocks (2 LayerNorms, Q/K/V/O, MLP, biases), final
        LayerNorm and the untied output head."""
        d, a, f = self.d_model, self.d_attn, self.d_mlp
        block = 2 * 2 * d + 3 * (d * a + a) + (a * d + d) + (d * f + f) + (f * d + d)
        return (self.vocab_size + self.seq_len) * d + self.n_layers * block + 2 * d + d * self.vocab_size


# name: (layers, width, heads, head width, mlp width), as the paper's §3 describes its models; then CPU sizes.
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "mini": (4, 512, 8, 32, 2048), "tiny": (4, 768, 12, 64, 3072), "small": (12, 768, 12, 64, 3072),
    "medium": (24, 1024, 16, 64, 4096),
    "cpu-xs": (2, 64, 2, 32, 256), "cpu-s": (4, 128, 4, 32, 512), "cpu-m": (4, 256, 4, 64, 1024),
    "cpu-l": (6, 384, 6, 64, 1536),
}  # fmt: skip


def resolve_model(cfg, vocab_size: int) -> ModelDims:
    """Preset dimensions, with any explicitly set (non-zero) field of `cfg` (a config.ModelConfig) overriding them."""
    if cfg.preset not in PRESETS:
        raise XlingError(f"unknown model.preset '{cfg.preset}': choose one of {', '.join(PRESETS)}")
    n_layers, d_model, n_heads, d_head, d_mlp = PRESETS[cfg.preset]
    n_layers, d_model, n_heads = cfg.n_layers or n_layers, cfg.d_model or d_model, cfg.n_heads or n_heads
    if cfg.d_head:
        d_head = cfg.d_head
    elif cfg.d_model or cfg.n_heads:  # a new width or head count: the heads split the width, as in GPT-2
        if d_model % n_heads:
            raise XlingError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads}), "
                             "or set model.d_head")
        d_head = d_model // n_heads
    return ModelDims(n_layers, d_model, n_heads, cfg.d_mlp or d_mlp, cfg.seq_len, vocab_size, d_head)
