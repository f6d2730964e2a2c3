"""The model's fast paths give the plain paths' numbers, and the paper's initialisation holds."""

import math

import pytest
import torch
import torch.nn.functional as F

from xling.errors import XlingError
from xling.model import gpt as M
from xling.model import loss as CE
from xling.model.gpt import GPT, causal_attention
from xling.model.loss import linear_cross_entropy
from xling.model_dims import ModelDims

DIMS = ModelDims(n_layers=3, d_model=32, n_heads=4, d_mlp=64, seq_len=24, vocab_size=300)


def _reference_loss(h, weight, targets, reduction="mean"):
    return F.cross_entropy(F.linear(h, weight).float(), targets, reduction=reduction)


def _case(n=70, d=16, v=50, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).requires_grad_()
    w = (scale * torch.randn(v, d, generator=g)).requires_grad_()
    return h, w, torch.randint(0, v, (n,), generator=g)


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def _chunk_rows(monkeypatch, rows: int, vocab: int, small_head: bool = True):
    """Make the training loss take `rows` rows a chunk on the small fp32 head's rule (else on the others' rule, the
    other rule's size set apart, so that a test sees which one ran)."""
    rule, other = "CE_CHUNK_ELEMENTS_SMALL_HEAD", "CE_CHUNK_ELEMENTS"
    if not small_head:
        monkeypatch.setattr(CE, "CE_SMALL_HEAD", 0)
        rule, other = other, rule
    monkeypatch.setattr(CE, rule, rows * vocab)
    monkeypatch.setattr(CE, other, 3 * rows * vocab)
    monkeypatch.setattr(CE, "CE_MIN_ROWS", 1)


# (rows per matmul chunk, rows per softmax slice) x 50 logits a row: 1 row; ragged chunks of 16 in
# slices of 5; everything at once; each with the chunk rule of a small fp32 head and that of the others
@pytest.mark.parametrize("small_head", [True, False])
@pytest.mark.parametrize("chunk_rows,slice_rows", [(1, 1), (16, 5), (1 << 16, 1 << 16)])
def test_chunked_cross_entropy_equals_the_reference_in_fp32(monkeypatch, chunk_rows, slice_rows, small_head):
    _chunk_rows(monkeypatch, chunk_rows, 50, small_head)
    monkeypatch.setattr(CE, "CE_SLICE_ELEMENTS", slice_rows * 50)
    h, w, t = _case(v=50)
    assert CE._training_chunks(len(h), w)[0] == (0, min(chunk_rows, len(h)))
    assert CE._sums_head_grad_transposed(w) == small_head  # (the small head's gradient summed as [width, vocab])
    loss, ref = linear_cross_entropy(h, w, t), _reference_loss(h, w, t)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(_grads(loss, h, w), _grads(ref, h, w)):
        assert got.is_contiguous()  # (the optimizer's layout)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("small_head", [True, False])
def test_chunked_cross_entropy_survives_extreme_logits(monkeypatch, small_head):
    _chunk_rows(monkeypatch, 16, 50, small_head)  # (far rows in every chunk and slice, not only the first)
    monkeypatch.setattr(CE, "CE_SLICE_ELEMENTS", 5 * 50)
    h, w, t = _case(scale=40.0)  # logit gaps in the hundreds: exp underflows, the loss must not
    loss, ref = linear_cross_entropy(h, w, t), _reference_loss(h, w, t)
    assert ref > 50 and math.isfinite(loss.item())
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
    for got, want in zip(_grads(loss, h, w), _grads(ref, h, w)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_training_chunks_are_small_only_for_a_small_fp32_head_on_a_cpu():
    def rows(vocab, width, dtype=torch.float32):
        return CE._training_chunks(2048, torch.empty(vocab, width, dtype=dtype))[0][1]

    assert rows(4096, 64) == 256  # cpu-xs, one clone: 4 MB of fp32 logits a chunk
    assert rows(4096, 64, torch.bfloat16) == 2048  # bf16: 8M logits a chunk (16 MB), as for the others
    assert rows(8192, 128) == 1024  # cpu-s: its head's fp32 gradient is 4 MB
    assert rows(65536, 64) == 512  # a large cloned vocabulary: never under CE_MIN_ROWS rows


def test_chunked_cross_entropy_under_bf16_autocast_matches_the_plain_path(monkeypatch):
    _chunk_rows(monkeypatch, 16, 50, small_head=False)  # (bf16 logits: the others' rule)
    monkeypatch.setattr(CE, "CE_SLICE_ELEMENTS", 5 * 50)
    h, w, t = _case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, ref = linear_cross_entropy(h, w, t), _reference_loss(h, w, t)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)  # same bf16 logits, fp32 softmax
    for got, want in zip(_grads(loss, h, w), _grads(ref, h, w)):  # bf16 gradients: bf16 tolerance
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.02 * want.abs().max().item())


# rows x vocabulary: one short row; the demo's slices; rows that end off the vector width; a large vocabulary
@pytest.mark.parametrize("rows,vocab", [(1, 50), (300, 2048), (7, 2049), (4, 65536)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_softmax_in_place_is_bit_identical_to_a_fresh_softmax(dtype, rows, vocab):
    """On a CPU the loss overwrites its logits with the softmax (no copy back); every bit of the gradient must be as
    before, and a slice of a chunk (as the loss passes them) must leave the chunk's other rows alone. The loss, read
    off the target's probability, is the reference's within fp32 rounding."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(rows + 2, 16, generator=g).to(dtype), torch.randn(vocab, 16, generator=g).to(dtype)
    chunk = h @ w.t()  # (as the loss computes them, should a row be far)
    logits, targets = chunk[1:-1], torch.randint(0, vocab, (rows, 1), generator=g)
    part = logits.float()  # the reference: a fresh softmax, the gradient copied back
    probs = torch.softmax(part, dim=1)
    want_loss = F.cross_entropy(part.double(), targets.squeeze(1), reduction="sum").float()
    want_grad = probs.scatter_add_(1, targets, probs.new_full((rows, 1), -1.0)).to(dtype)
    got = chunk.clone()
    loss = CE._softmax_grad(got[1:-1], targets, h[1:-1], w)
    torch.testing.assert_close(loss, want_loss, rtol=2e-6, atol=1e-5)
    assert torch.equal(got[1:-1], want_grad)
    assert torch.equal(got[[0, -1]], chunk[[0, -1]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_far_target_loss_is_computed_from_its_logits_again(dtype):
    """A target probability below FAR_TARGET must not make the loss infinite (fp32 rounds e^-200 to 0) or inexact
    (e^-100 is subnormal: read off, its loss would be 99.98): its row is computed again from h and the weight; the
    other rows keep the loss read off the softmax."""
    want_logits = torch.tensor([[0.0, 0, 0], [0, 200, 0], [100, 0, 0]])
    h, w = torch.eye(3, dtype=dtype), want_logits.t().contiguous().to(dtype)  # h @ w.T: these logits (exact in bf16)
    targets = torch.tensor([[2], [0], [1]])  # target probabilities 1/3, e^-200, e^-100
    want = F.cross_entropy(want_logits.double(), targets.squeeze(1), reduction="sum").item()  # ln 3 + 300
    loss = CE._softmax_grad(h @ w.t(), targets, h, w).item()
    assert math.isfinite(loss) and abs(loss - want) < 1e-4


# Inductor's CPU code for it fails before torch 2.13 (KeyError 'buf1' with 2.11; its GPU code works there)
OLD_INDUCTOR = tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 13)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    OLD_INDUCTOR, reason="Inductor's CPU code for it fails before torch 2.13"))])
def test_fusable_softmax_gives_the_eager_loss_and_gradient(monkeypatch, compiled):
    """The form `train.compile` hands to the compiler on a GPU, eager and compiled (here on the CPU)."""
    monkeypatch.setattr(CE, "CE_SLICE_ELEMENTS", 16 * 50)
    h, w, t = _case(scale=40.0)  # extreme logits too
    if compiled:  # one graph, no break (in training a break would fall back to eager without a word)
        torch.compile(CE._fusable_softmax_grad, fullgraph=True)(torch.randn(4, 50), torch.randint(0, 50, (4, 1)))
    else:
        monkeypatch.setattr(CE, "_fused_softmax_grad", lambda: CE._fusable_softmax_grad)
    loss, ref = linear_cross_entropy(h, w, t, fused_softmax=True), linear_cross_entropy(h, w, t)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-5)
    for got, want in zip(_grads(loss, h, w), _grads(ref, h, w)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_per_token_losses_match_the_reference_without_a_graph():
    h, w, t = _case()
    per_token = linear_cross_entropy(h, w, t, per_token=True)
    torch.testing.assert_close(per_token, _reference_loss(h, w, t, "none"), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), _reference_loss(h, w, t), rtol=1e-6, atol=1e-6)


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(DIMS)


def test_model_loss_paths_agree_with_the_logits():
    model = _model()
    x, y = torch.randint(0, 300, (3, 24)), torch.randint(0, 300, (3, 24))
    logits = model(x)
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(3, 24)
    torch.testing.assert_close(model.loss(x, y), ref.mean(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(x, y), ref.mean(), rtol=1e-6, atol=1e-6)  # forward with targets = loss
    with torch.no_grad():
        torch.testing.assert_close(model.loss(x, y, per_token=True), ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.loss(x, y, per_token=True, last_n=5), ref[:, -5:], rtol=1e-6, atol=1e-6)


def test_the_last_positions_features_skip_the_last_blocks_other_positions():
    model = _model()
    x = torch.randint(0, 300, (3, 24))
    mlp_rows = {i: [] for i in range(len(model.blocks))}
    hooks = [block.fc.register_forward_hook(lambda mod, args, out, i=i: mlp_rows[i].append(args[0].shape[1]))
             for i, block in enumerate(model.blocks)]
    with torch.no_grad():
        full, last = model.features(x), model.features(x, last_n=5)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(last, full[:, -5:], rtol=1e-6, atol=1e-6)
    assert len(mlp_rows) > 1 and mlp_rows.pop(len(model.blocks) - 1) == [24, 5]  # the last block: 5 positions
    assert all(rows == [24, 24] for rows in mlp_rows.values())  # the others: every position (keys and values)
    y = torch.randint(0, 300, (3, 24))
    with torch.no_grad():  # more last positions than there are: all of them, as before
        torch.testing.assert_close(model.loss(x, y, per_token=True, last_n=30), model.loss(x, y, per_token=True))
    with pytest.raises(XlingError, match="last_n is the number of last positions scored"):
        model.loss(x, y, last_n=-1)


@pytest.mark.parametrize("t", [20, M.CPU_EXPLICIT_ATTENTION_MAX_LEN + 8])  # explicit path, SDPA path
def test_cpu_attention_equals_sdpa(t):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, t, 8, generator=g, requires_grad=True) for _ in range(3))
    out = causal_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_block_equals_separate_q_k_v_linears():
    model = _model()
    block, x = model.blocks[0], torch.randn(2, 24, 32)
    b, t, d, n = 2, 24, 32, block.n_heads
    h = block.ln_1(x)
    q, k, v = (lin(h).view(b, t, n, d // n).transpose(1, 2) for lin in (block.q, block.k, block.v))
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
    x2 = x + block.o(attn)
    ref = x2 + block.proj(F.gelu(block.fc(block.ln_2(x2)), approximate="tanh"))
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_paper_initialisation():
    model = GPT(ModelDims(n_layers=4, d_model=256, n_heads=4, d_mlp=1024, seq_len=64, vocab_size=2000))
    assert model.head.weight is not model.tok_emb.weight and model.head.bias is None  # untied, no bias
    for name, p in model.named_parameters():
        if name.endswith("proj.weight"):
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05), name
        elif name.endswith(".weight") and p.dim() == 2:
            assert p.std().item() == pytest.approx(0.02, rel=0.05) and abs(p.mean().item()) < 1e-3, name
        elif name.endswith(".bias"):
            assert torch.all(p == 0), name
        else:  # LayerNorm gains
            assert torch.all(p == 1), name
    idx = torch.tensor([[5, 7, 9]])
    want = model.tok_emb(idx) * math.sqrt(256) + model.pos_emb(torch.arange(3))
    torch.testing.assert_close(model._embed(idx), want)  # token embedding scaled by sqrt(d)


def test_training_step_is_deterministic_on_cpu():
    def run():
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        x, y = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(3)), torch.arange(96).view(4, 24) % 300
        losses = []
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        return losses, model.head.weight.detach().clone()

    (la, wa), (lb, wb) = run(), run()
    assert la == lb and torch.equal(wa, wb)


# The paper's models (its §3): layers, width, heads x head width, MLP width. With its 16,384-piece
# vocabulary and 512 positions: token and position embeddings, per block two LayerNorms (weight and
# bias), Q/K/V from the width to heads x head width and O back (all with biases), the MLP, then the
# final LayerNorm and an untied output head without bias.
PAPER_MODELS = {"mini": (4, 512, 8, 32, 2048), "tiny": (4, 768, 12, 64, 3072), "small": (12, 768, 12, 64, 3072),
                "medium": (24, 1024, 16, 64, 4096)}


def _paper_parameter_count(layers, width, heads, head, mlp, vocab=16384, positions=512):
    attn = heads * head
    block = 4 * width + 3 * (width * attn + attn) + attn * width + width + 2 * width * mlp + mlp + width
    return vocab * width + positions * width + layers * block + 2 * width + width * vocab


@pytest.mark.parametrize("preset", list(PAPER_MODELS))
def test_paper_presets_are_the_papers_models(preset):
    from xling.config import ModelConfig
    from xling.model_dims import resolve_model

    dims = resolve_model(ModelConfig(preset=preset, seq_len=512), 16384)
    assert (dims.n_layers, dims.d_model, dims.n_heads, dims.d_head, dims.d_mlp) == PAPER_MODELS[preset]
    expected = _paper_parameter_count(*PAPER_MODELS[preset])
    assert dims.num_parameters() == expected
    assert expected == {"mini": 27_549_696, "tiny": 53_912_064, "small": 110_615_040, "medium": 336_390_144}[preset]
    if preset == "mini":  # small enough to build here: the module has exactly these parameters
        model = GPT(dims)
        assert model.num_parameters() == expected and model.blocks[0].q.weight.shape == (256, 512)
        assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 16384)


def test_generation_chooses_only_the_allowed_ids():
    from xling.model.gpt import generate

    model = _model().eval()
    allowed = torch.zeros(DIMS.vocab_size, dtype=torch.bool)
    allowed[[3, 5, 8]] = True
    for temperature, top_k in ((0.0, 0), (1.5, 0), (1.0, 2)):
        out = generate(model, torch.tensor([1, 2]), 40, temperature, top_k, torch.Generator().manual_seed(0), allowed)
        assert set(out.tolist()) <= {3, 5, 8}
    free = generate(model, torch.tensor([1, 2]), 40, 1.5, 0, torch.Generator().manual_seed(0))
    assert not set(free.tolist()) <= {3, 5, 8}  # without the mask the model ranges over its vocabulary
    # an end of document ends it, and is not returned: the ids before it are those sampled without the stop
    stopped = generate(model, torch.tensor([1, 2]), 40, 1.5, 0, torch.Generator().manual_seed(0), stop={free[5].item()})
    first = free.tolist().index(free[5].item())
    assert stopped.tolist() == free[:first].tolist()
