"""The GPU paths on a real GPU: the fused loss, SDPA attention, bf16 and fp16 training, compile, resume.

Skipped where torch sees no CUDA GPU (CI has none); `benchmarks/gpu.sh` runs them on a GPU machine.
On a GPU the rest of the suite runs on it too wherever a config says `device: auto`.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import run_losses, tiny_config
from xling.model.gpt import GPT
from xling.model.loss import linear_cross_entropy
from xling.model_dims import ModelDims
from xling.train.rundir import RunDir
from xling.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DIMS = ModelDims(n_layers=2, d_model=64, n_heads=4, d_mlp=256, seq_len=64, vocab_size=500)


@pytest.fixture(autouse=True)
def _exact_fp32():
    """fp32 comparisons with the CPU need full fp32 GEMMs (no TF32), whatever the process set."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old



def test_fused_cross_entropy_on_the_gpu_equals_the_reference():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 32, generator=g).cuda().requires_grad_()
    w = (0.3 * torch.randn(5000, 32, generator=g)).cuda().requires_grad_()
    t = torch.randint(0, 5000, (300,), generator=g).cuda()
    loss, ref = linear_cross_entropy(h, w, t), F.cross_entropy(F.linear(h, w), t)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(loss, (h, w)), torch.autograd.grad(ref, (h, w))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_compiled_loss_softmax_on_the_gpu_equals_the_eager_one():
    """What `train.compile` uses on a GPU: one compiled kernel for the softmax and its gradient."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3000, 64, generator=g).cuda().requires_grad_()
    w = (3.0 * torch.randn(5000, 64, generator=g)).cuda().requires_grad_()  # logit gaps in the hundreds too
    t = torch.randint(0, 5000, (3000,), generator=g).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fused, eager = linear_cross_entropy(h, w, t, fused_softmax=True), linear_cross_entropy(h, w, t)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(fused, (h, w)), torch.autograd.grad(eager, (h, w))):
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.02 * want.abs().max().item())  # bf16 gradients


def test_the_gpu_model_computes_the_cpu_models_loss_and_gradients():
    """SDPA (flash / memory-efficient) on the GPU against the explicit attention of the CPU, same weights."""
    torch.manual_seed(0)
    cpu = GPT(DIMS)
    gpu = GPT(DIMS).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x, y = torch.randint(0, 500, (4, 64)), torch.randint(0, 500, (4, 64))
    loss_cpu, loss_gpu = cpu(x, y), gpu(x.cuda(), y.cuda())
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-5, atol=1e-5)
    loss_cpu.backward()
    loss_gpu.backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("precision,compile", [("bf16", False), ("fp16", False), ("bf16", True)])
def test_gpu_training_learns_and_resumes_exactly(tiny_corpus_dir, tmp_path, precision, compile):
    """bf16 autocast, or fp16 with the loss scaler, eager or compiled (blocks and loss softmax); a killed
    run resumed gives the uninterrupted losses."""
    cfg = tiny_config(tiny_corpus_dir, train={"device": "cuda", "precision": precision, "compile": compile})
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    Trainer(cfg, whole).fit(progress=False)
    losses = run_losses(whole)
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5
    assert Trainer(cfg, resumed).fit(progress=False, stop_at=6)["status"] == "interrupted"
    Trainer(cfg, resumed).fit(resume=True, progress=False)
    assert run_losses(resumed) == losses
    last = [RunDir(d).checkpoint_dirs()[-1] / "model.safetensors" for d in (whole, resumed)]
    assert last[0].read_bytes() == last[1].read_bytes()


def test_compiled_blocks_give_the_eager_losses_on_the_gpu(tiny_corpus_dir, tmp_path):
    eager = tiny_config(tiny_corpus_dir, train={"device": "cuda", "precision": "fp32", "steps": 4})
    compiled = tiny_config(tiny_corpus_dir, train={"device": "cuda", "precision": "fp32", "steps": 4,
                                                   "compile": True})
    Trainer(eager, tmp_path / "eager").fit(progress=False)
    Trainer(compiled, tmp_path / "compiled").fit(progress=False)
    assert run_losses(tmp_path / "compiled") == pytest.approx(run_losses(tmp_path / "eager"), rel=1e-4)


def test_precision_auto_is_bf16_and_compile_fuses_the_loss_softmax_on_a_gpu(tiny_corpus_dir, tmp_path):
    trainer = Trainer(tiny_config(tiny_corpus_dir, train={"device": "cuda", "precision": "auto", "compile": True}),
                      tmp_path / "r")
    trainer.prepare(resume=False)
    assert trainer.device.type == "cuda" and trainer.model.fused_softmax is True
    assert trainer.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
