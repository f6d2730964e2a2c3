"""The output head's loss: cross-entropy of h @ W.T in fp32 without materialising all the logits."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Logits per chunk of rows: the matmuls run on chunks of CE_CHUNK_ELEMENTS logits (CPU: 16 MB
# of bf16, which stays in a typical L3 cache for the softmax that reads it; GPU: 128 MB) but
# never fewer than CE_MIN_ROWS rows: each chunk adds a [vocab, D] fp32 gradient and runs GEMMs of
# its rows, so at large vocabularies small chunks are slow (benchmarks/cross_entropy.py). The fp32
# softmax runs on slices of CE_SLICE_ELEMENTS (CPU: 2 MB, in a core's L2 cache). All far below a
# full large-vocabulary logits tensor.
CE_CHUNK_ELEMENTS = 1 << 23
CE_MIN_ROWS = 512
CE_SLICE_ELEMENTS = 1 << 19
CE_CHUNK_ELEMENTS_GPU = 1 << 26
# Training in fp32 on a CPU with a small head (vocab x width <= CE_SMALL_HEAD: its fp32 gradient, added
# once a chunk, is <= 1 MB), the logits go straight into the softmax, and chunks of CE_CHUNK_ELEMENTS_SMALL_HEAD
# (4 MB) of them, nearer the core, were measured faster than 32 MB ones; with so small a gradient to add, no
# CE_MIN_ROWS either. Larger heads and bf16 logits were not faster so: they keep the chunks above (README,
# "What made it fast", item 2).
CE_SMALL_HEAD = 1 << 18
CE_CHUNK_ELEMENTS_SMALL_HEAD = 1 << 20
# Below this target probability (a loss above ~69 nats) a loss is not read off the softmax (`_target_losses`): a
# margin above fp32's smallest normal number (2^-126), below which the probability loses bits and from ~2^-150 is 0.
FAR_TARGET = 2.0 ** -100


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


def _small_fp32_cpu_head(weight: torch.Tensor) -> bool:
    """Whether the head (`weight` in the matmul dtype) takes the small fp32 head's rules on a CPU (CE_SMALL_HEAD)."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.numel() <= CE_SMALL_HEAD


def _training_chunks(n_rows: int, weight: torch.Tensor):
    """`_chunks` of the training loss (`weight` in the matmul dtype): smaller for a small fp32 head on a CPU."""
    if _small_fp32_cpu_head(weight):
        return _spans(n_rows, CE_CHUNK_ELEMENTS_SMALL_HEAD, len(weight))
    return _chunks(n_rows, len(weight), weight.device)


def _sums_head_grad_transposed(weight: torch.Tensor) -> bool:
    """Whether the head's gradient is summed as [width, vocab] (h.T @ logits into it, one GEMM a chunk): for a small
    fp32 head on a CPU 1.15-1.3x faster than logits.T @ h added to a [vocab, width] sum, for larger ones no faster
    (README, "What made it fast", item 2). (bf16 logits: the GEMM's bf16 result is added to the fp32 sum apart.)"""
    return _small_fp32_cpu_head(weight)


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
    def forward(ctx, h, weight, targets, dtype, fused_softmax):
        need_h, need_w = ctx.needs_input_grad[:2]
        fused = _fused_softmax_grad() if fused_softmax else None
        with torch.autocast(h.device.type, enabled=False):
            hc, wc = h.to(dtype), weight.to(dtype)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(hc) if need_h else None
            transposed = need_w and _sums_head_grad_transposed(wc)
            grad_w = torch.zeros(weight.shape[::-1] if transposed else weight.shape, dtype=torch.float32,
                                 device=h.device) if need_w else None
            for s, e in _training_chunks(len(hc), wc):
                logits = hc[s:e] @ wc.t()  # [rows, V] in the matmul dtype
                for a, b in _slices(e - s, len(wc), h.device):
                    rows = slice(s + a, s + b)
                    if fused is not None:
                        total += fused(logits[a:b], targets[rows, None])
                    else:
                        total += _softmax_grad(logits[a:b], targets[rows, None], hc[rows], wc)
                if need_h:
                    torch.mm(logits, wc, out=grad_h[s:e])
                if transposed:
                    torch.addmm(grad_w, hc[s:e].t(), logits, out=grad_w)
                elif need_w:
                    grad_w += logits.t() @ hc[s:e]
            if transposed:
                grad_w = grad_w.t().contiguous()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.dtypes = len(hc), (h.dtype, weight.dtype)
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        gh = (grad_h.float() * scale).to(ctx.dtypes[0]) if grad_h is not None else None  # fp32: a loss
        gw = (grad_w * scale).to(ctx.dtypes[1]) if grad_w is not None else None  # scale may be large
        return gh, gw, None, None, None


def _softmax_grad(logits: torch.Tensor, targets: torch.Tensor, rows_h: torch.Tensor, weight: torch.Tensor
                  ) -> torch.Tensor:
    """The summed loss of a slice of logits [rows, V] = rows_h @ weight.T (targets [rows, 1]), fp32 inside; its
    gradient d(sum of losses)/d(logits) = softmax - one-hot is written over the logits.

    (Converting first is much faster on CPU than softmax(..., dtype=float32) on bf16 logits.)
    """
    part = logits.float()  # fp32 logits are this very tensor, others an fp32 copy
    if part.device.type == "cpu":
        # The softmax overwrites `part` (its kernel reads each element before writing it; a test checks that the
        # result is bit-identical): fp32 logits then need no copy back. The loss is read off it (`_target_losses`).
        probs = torch.softmax(part, dim=1, out=part)
        loss = _target_losses(probs, targets, rows_h, weight)
    else:  # (no host sync on a GPU: the loss from the max logit, two more passes that cost little there)
        top = part.amax(dim=1, keepdim=True)
        target_logit = part.gather(1, targets)
        probs = torch.softmax(part, dim=1)
        # log-sum-exp = max logit - log(largest probability): that probability is >= 1/V,
        # so this never underflows, and the loss needs no second pass of exponentials.
        loss = (top - probs.amax(dim=1, keepdim=True).log() - target_logit).sum()
    probs.scatter_add_(1, targets, probs.new_full((1, 1), -1.0).expand(len(targets), 1))
    if probs is not logits:
        logits.copy_(probs)
    return loss


def _target_losses(probs: torch.Tensor, targets: torch.Tensor, rows_h: torch.Tensor, weight: torch.Tensor
                   ) -> torch.Tensor:
    """The summed loss of softmax rows: -log p(target) = log-sum-exp - target logit, with no pass over the logits
    for their max (two passes fewer than `top - log(max p) - target logit`: 2-8 % of the demo's step on a CPU).
    Rows whose target probability is below FAR_TARGET (a diverging run) are computed again from their logits, in
    log-sum-exp form."""
    target_probs = probs.gather(1, targets).squeeze(1)
    losses = target_probs.log().neg_()
    far = (target_probs < FAR_TARGET).nonzero().squeeze(1)
    if len(far):
        far_logits = (rows_h[far] @ weight.t()).float()
        losses[far] = torch.logsumexp(far_logits, dim=1) - far_logits.gather(1, targets[far]).squeeze(1)
    return losses.sum()


def _fusable_softmax_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`_softmax_grad` in the form a compiler fuses into a few passes over the slice (no scatter)."""
    part = logits.float()
    top = part.amax(dim=1, keepdim=True)
    exps = torch.exp(part - top)
    total = exps.sum(dim=1, keepdim=True)
    loss = (top + total.log() - part.gather(1, targets)).sum()
    is_target = torch.arange(part.shape[1], device=part.device) == targets
    logits.copy_(torch.where(is_target, exps / total - 1.0, exps / total))
    return loss


@functools.cache
def _fused_softmax_grad():
    """`_fusable_softmax_grad` compiled once per process (GPU: one Triton kernel pass instead of ~10 eager ones)."""
    return torch.compile(_fusable_softmax_grad)


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
                         per_token: bool = False, fused_softmax: bool = False) -> torch.Tensor:
    """F.cross_entropy(h @ weight.T, targets) in fp32 without materialising all the logits.

    h [N, D], weight [V, D], targets [N]. Returns the mean, or the loss of every row [N] when
    `per_token`. Under autocast the matmuls run in the autocast dtype, like nn.Linear would.
    `fused_softmax`: the training loss's softmax and gradient through torch.compile (`train.compile` on a GPU).
    """
    dtype = _compute_dtype(h)
    needs_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    if per_token and needs_grad:  # rare (per-token gradients): the plain, materialising path
        return F.cross_entropy(F.linear(h, weight).float(), targets, reduction="none")
    if per_token or not needs_grad:
        losses = _per_token_ce(h.detach(), weight.detach(), targets, dtype)
        return losses if per_token else losses.mean()
    return _LinearCrossEntropy.apply(h, weight, targets, dtype, fused_softmax)
