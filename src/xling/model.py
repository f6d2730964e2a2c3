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


# Up to this length, CPU attention is plain batched matmuls + softmax: forward + backward 2.4x
# faster than the CPU flash kernel at 128 tokens, 1.1-1.8x at 256, even at 512 (README, Performance).
# Beyond it flash wins on memory: the [T, T] probabilities kept for backward grow with T^2.
CPU_EXPLICIT_ATTENTION_MAX_LEN = 256


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention of [B, H, T, head_dim] tensors, scale 1/sqrt(head_dim)."""
    b, h, t, hd = q.shape
    if q.device.type != "cpu" or t > CPU_EXPLICIT_ATTENTION_MAX_LEN:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # flash / memory-efficient kernels
    future = torch.full((t, t), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
    # One kernel for scale, scores and causal mask; softmax keeps the input dtype (fp32 inside).
    scores = torch.baddbmm(future, q.reshape(b * h, t, hd), k.reshape(b * h, t, hd).transpose(1, 2), alpha=hd ** -0.5)
    return (torch.softmax(scores, dim=-1) @ v.reshape(b * h, t, hd)).view(b, h, t, hd)


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
        # One matmul for Q, K and V (a bigger GEMM runs faster); the parameters stay separate,
        # as in the paper, so checkpoints and per-tensor analyses keep their names.
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        qkv = F.linear(h, weight, bias).view(b, t, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous()  # one copy into [3, B, H, T, head_dim]
        attn = causal_attention(q, k, v)
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

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states [B, T, D] (after the last LayerNorm), the head's input."""
        x = self._embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab]; with `targets`, the mean loss instead (the training step goes
        through forward so that a DDP wrapper sees it)."""
        if targets is not None:
            return self.loss(idx, targets)
        return self.head(self.features(idx))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, per_token: bool = False, last_n: int = 0) -> torch.Tensor:
        """Next-token cross-entropy in fp32: the mean, or per token [B, T] when `per_token`.

        `last_n` > 0 scores only the last last_n positions of each row (per token [B, last_n]):
        evaluation scores only those, so the output head runs on a quarter of the positions.
        The [B, T, vocab] logits are never materialised (see `linear_cross_entropy`).
        """
        h = self.features(idx)
        if last_n:
            h, targets = h[:, -last_n:], targets[:, -last_n:]
        losses = linear_cross_entropy(h.flatten(0, 1), self.head.weight, targets.flatten(), per_token=per_token)
        return losses.view_as(targets) if per_token else losses

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --------------------------------------------------------------------------- loss

# Logits per chunk of rows: the matmuls run on chunks of CE_CHUNK_ELEMENTS logits (CPU: 16 MB
# of bf16, which stays in a typical L3 cache for the softmax that reads it; GPU: 128 MB) but
# never fewer than CE_MIN_ROWS rows: each chunk adds a [vocab, D] fp32 gradient and runs GEMMs of
# its rows, so at a 65,536-token vocabulary 64-row chunks made the loss 1.5x slower than 512-row
# ones (benchmarks/cross_entropy.py). The fp32 softmax runs on slices of CE_SLICE_ELEMENTS (CPU:
# 2 MB, in the core's L2 cache). All far below a full large-vocabulary logits tensor.
CE_CHUNK_ELEMENTS = 1 << 23
CE_MIN_ROWS = 512
CE_SLICE_ELEMENTS = 1 << 19
CE_CHUNK_ELEMENTS_GPU = 1 << 26


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would use for the output head here."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


def _spans(n_rows: int, elements: int, vocab: int):
    rows = max(1, elements // vocab)
    return [(s, min(s + rows, n_rows)) for s in range(0, n_rows, rows)]


def _chunks(n_rows: int, vocab: int, device: torch.device):
    elements = CE_CHUNK_ELEMENTS if device.type == "cpu" else CE_CHUNK_ELEMENTS_GPU
    return _spans(n_rows, max(elements, CE_MIN_ROWS * vocab), vocab)


def _slices(n_rows: int, vocab: int, device: torch.device):
    return _spans(n_rows, CE_SLICE_ELEMENTS, vocab) if device.type == "cpu" else [(0, n_rows)]


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `h @ weight.T`, one row chunk of logits at a time.

    The full [N, vocab] fp32 logits (and their gradient) of a large cloned vocabulary are
    hundreds of MB per step; on CPU, allocating them afresh every step costs as much system
    time (page faults) as the matmuls. Here the forward pass computes each chunk's logits,
    its loss and its gradient (softmax - one-hot) and folds it straight into the gradients of
    h and weight, so only one chunk of logits ever exists. Backward just scales them.
    The numbers are those of the plain path: logits in the matmul dtype, softmax in fp32.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, dtype):
        need_h, need_w = ctx.needs_input_grad[:2]
        with torch.autocast(h.device.type, enabled=False):
            hc, wc = h.to(dtype), weight.to(dtype)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(hc) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
            minus_one = torch.full((1, 1), -1.0, device=h.device)
            for s, e in _chunks(len(hc), len(wc), h.device):
                logits = hc[s:e] @ wc.t()  # [rows, V] in the matmul dtype
                for a, b in _slices(e - s, len(wc), h.device):
                    # fp32 softmax of a cache-sized slice. (Converting first is ~6x faster on CPU
                    # than softmax(..., dtype=float32) on bf16 input.)
                    part, tgt = logits[a:b].float(), targets[s + a:s + b, None]
                    probs = torch.softmax(part, dim=1)
                    # log-sum-exp = max logit - log(largest probability): that probability is >= 1/V,
                    # so this never underflows, and the loss needs no second pass of exponentials.
                    lse = part.amax(dim=1, keepdim=True) - probs.amax(dim=1, keepdim=True).log()
                    total += (lse - part.gather(1, tgt)).sum()
                    # d(sum of losses)/d(logits) = softmax - one-hot, written over the logits
                    logits[a:b] = probs.scatter_add_(1, tgt, minus_one.expand(b - a, 1))
                if need_h:
                    torch.mm(logits, wc, out=grad_h[s:e])
                if need_w:
                    grad_w += logits.t() @ hc[s:e]
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.dtypes = len(hc), (h.dtype, weight.dtype)
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        gh = (grad_h.float() * scale).to(ctx.dtypes[0]) if grad_h is not None else None  # fp32: a loss
        gw = (grad_w * scale).to(ctx.dtypes[1]) if grad_w is not None else None  # scale may be large
        return gh, gw, None, None


def _per_token_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cross-entropy of every row [N] in fp32, chunk by chunk (no gradient)."""
    out = torch.empty(len(h), dtype=torch.float32, device=h.device)
    with torch.autocast(h.device.type, enabled=False):
        hc, wc = h.to(dtype), weight.to(dtype)
        for s, e in _chunks(len(hc), len(wc), h.device):
            log_probs = torch.log_softmax((hc[s:e] @ wc.t()).float(), dim=1)
            out[s:e] = -log_probs.gather(1, targets[s:e, None]).squeeze(1)
    return out


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         per_token: bool = False) -> torch.Tensor:
    """F.cross_entropy(h @ weight.T, targets) in fp32 without materialising all the logits.

    h [N, D], weight [V, D], targets [N]. Returns the mean, or the loss of every row [N] when
    `per_token`. Under autocast the matmuls run in the autocast dtype, like nn.Linear would.
    """
    dtype = _compute_dtype(h)
    needs_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    if per_token and needs_grad:  # rare (per-token gradients): the plain, materialising path
        return F.cross_entropy(F.linear(h, weight).float(), targets, reduction="none")
    if per_token or not needs_grad:
        losses = _per_token_ce(h.detach(), weight.detach(), targets, dtype)
        return losses if per_token else losses.mean()
    return _LinearCrossEntropy.apply(h, weight, targets, dtype)


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
