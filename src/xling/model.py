"""The paper's GPT (PAPER.md section 3): GPT-2 style, pre-LN, untied output head, no dropout."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import XlingError


@dataclass(frozen=True)
class ModelDims:
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    seq_len: int
    vocab_size: int


# name: (layers, width, heads, mlp width). Paper sizes first, then CPU-scale sizes.
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "mini": (4, 512, 8, 2048),
    "tiny": (4, 768, 12, 3072),
    "small": (12, 768, 12, 3072),
    "medium": (24, 1024, 16, 4096),
    "cpu-xs": (2, 64, 2, 256),
    "cpu-s": (4, 128, 4, 512),
    "cpu-m": (4, 256, 4, 1024),
    "cpu-l": (6, 384, 6, 1536),
}


def resolve_model(cfg, vocab_size: int) -> ModelDims:
    """Preset dimensions, with any explicitly set (non-zero) field of `cfg` overriding them."""
    if cfg.preset not in PRESETS and not all((cfg.n_layers, cfg.d_model, cfg.n_heads)):
        raise XlingError(f"unknown model.preset '{cfg.preset}': choose one of {', '.join(PRESETS)}")
    n_layers, d_model, n_heads, d_mlp = PRESETS.get(cfg.preset, (0, 0, 0, 0))
    n_layers = cfg.n_layers or n_layers
    d_model = cfg.d_model or d_model
    n_heads = cfg.n_heads or n_heads
    d_mlp = cfg.d_mlp or d_mlp or 4 * d_model
    if d_model % n_heads:
        raise XlingError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
    if not 2 <= cfg.seq_len <= 65536:
        raise XlingError(f"model.seq_len must be between 2 and 65536, got {cfg.seq_len}")
    return ModelDims(n_layers, d_model, n_heads, d_mlp, cfg.seq_len, vocab_size)


class Block(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        d = dims.d_model
        self.n_heads = dims.n_heads
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.fc = nn.Linear(d, dims.d_mlp)
        self.proj = nn.Linear(dims.d_mlp, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln_1(x)
        q, k, v = (lin(h).view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for lin in (self.q, self.k, self.v))
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.tok_emb = nn.Embedding(dims.vocab_size, dims.d_model)
        self.pos_emb = nn.Embedding(dims.seq_len, dims.d_model)
        self.blocks = nn.ModuleList(Block(dims) for _ in range(dims.n_layers))
        self.ln_f = nn.LayerNorm(dims.d_model, eps=1e-5)
        self.head = nn.Linear(dims.d_model, dims.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * self.dims.n_layers))

    def hidden_states(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output [B, T, D] (before the final LayerNorm), for alignment analyses."""
        states = []
        x = self._embed(idx)
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.dims.seq_len:
            raise XlingError(f"sequence of {t} tokens is longer than the model's maximum {self.dims.seq_len}")
        positions = torch.arange(t, device=idx.device)
        return self.tok_emb(idx) * math.sqrt(self.dims.d_model) + self.pos_emb(positions)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab]."""
        x = self._embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        """Next-token cross-entropy in fp32: the mean, or per token [B, T] when `per_token`."""
        logits = self(idx).float().flatten(0, 1)
        if per_token:
            return F.cross_entropy(logits, targets.flatten(), reduction="none").view_as(targets)
        return F.cross_entropy(logits, targets.flatten())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample a continuation of a 1-D prompt of model ids (greedy when temperature == 0)."""
    ids = prompt.view(1, -1)
    for _ in range(max_new_tokens):
        logits = model(ids[:, -model.dims.seq_len:])[0, -1].float()
        if temperature <= 0:
            nxt = logits.argmax().view(1)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -float("inf")
            nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(ids.device)
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, prompt.numel():]
