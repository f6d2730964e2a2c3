"""The paper's GPT (its section 3): GPT-2 style, pre-LN, learned positions, untied output head, no dropout."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import XlingError
from ..model_dims import ModelDims
from .loss import linear_cross_entropy

# Up to this length, CPU attention is plain batched matmuls + softmax, which is faster than the CPU
# flash kernel at short lengths (README, Performance). Beyond it flash wins on memory: the [T, T]
# probabilities kept for backward grow with T^2.
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
        d, a = dims.d_model, dims.d_attn
        self.n_heads, self.d_head = dims.n_heads, dims.d_head
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.q, self.k, self.v = (nn.Linear(d, a) for _ in range(3))
        self.o = nn.Linear(a, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.fc = nn.Linear(d, dims.d_mlp)
        self.proj = nn.Linear(dims.d_mlp, d)

    def forward(self, x: torch.Tensor, last_n: int = 0) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; `last_n` > 0: only the last last_n positions' outputs [B, last_n, D] (all
        positions still serve as keys and values)."""
        b, t, _ = x.shape
        h = self.ln_1(x)
        # One matmul for Q, K and V (a bigger GEMM runs faster); the parameters stay separate,
        # as in the paper, so checkpoints and per-tensor analyses keep their names.
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        qkv = F.linear(h, weight, bias).view(b, t, 3, self.n_heads, self.d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous()  # one copy into [3, B, H, T, head_dim]
        attn = causal_attention(q, k, v)
        if 0 < last_n < t:  # the projections and MLP of the other positions would go unused
            attn, x, t = attn[:, :, -last_n:], x[:, -last_n:], last_n
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))
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
        self.fused_softmax = False  # the training loss's softmax through torch.compile (`linear_cross_entropy`)
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

    def features(self, idx: torch.Tensor, last_n: int = 0) -> torch.Tensor:
        """The final hidden states [B, T, D] (after the last LayerNorm), the head's input; `last_n` > 0: of the
        last last_n positions only, [B, last_n, D] (the last block computes no others)."""
        x = self._embed(idx)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.ln_f(self.blocks[-1](x, last_n))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab]; with `targets`, the mean loss instead (the training step goes
        through forward so that a DDP wrapper sees it)."""
        if targets is not None:
            return self.loss(idx, targets)
        return self.head(self.features(idx))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, per_token: bool = False, last_n: int = 0) -> torch.Tensor:
        """Next-token cross-entropy in fp32: the mean, or per token [B, T] when `per_token`.

        `last_n` > 0 scores only the last last_n positions of each row (per token [B, last_n]):
        evaluation scores only those, so the output head and the last block's projections and MLP run on a
        quarter of the positions. The [B, T, vocab] logits are never materialised (see `linear_cross_entropy`).
        """
        if last_n < 0:
            raise XlingError(f"last_n is the number of last positions scored (0: all of them), got {last_n}")
        h = self.features(idx, last_n)
        if last_n:
            targets = targets[:, -last_n:]
        losses = linear_cross_entropy(h.flatten(0, 1), self.head.weight, targets.flatten(), per_token=per_token,
                                      fused_softmax=self.fused_softmax)
        return losses.view_as(targets) if per_token else losses

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, generator: torch.Generator | None = None,
             allowed: torch.Tensor | None = None, stop: Collection[int] = ()) -> torch.Tensor:
    """Sample a continuation of a 1-D prompt of model ids (greedy when temperature == 0); `allowed`: a boolean
    mask over the vocabulary, the only ids it may choose (one language's); `stop`: ids that end it (an end of
    document, as Hugging Face's generate stops at the end-of-text id), not returned."""
    ids = prompt.view(1, -1)
    for _ in range(max_new_tokens):
        logits = model(ids[:, -model.dims.seq_len:])[0, -1].float()
        if logits.isnan().any():
            raise XlingError("the model's outputs are not numbers: its weights are not finite (a diverged or damaged "
                             "checkpoint)")
        if allowed is not None:
            logits[~allowed] = -float("inf")
        if temperature <= 0:
            nxt = logits.argmax().view(1)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -float("inf")
            nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).to(ids.device)
        if int(nxt) in stop:
            break
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, prompt.numel():]
