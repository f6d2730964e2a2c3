"""`xling bench`: training-step speed, MFU and the ratio to Hugging Face GPT-2 on identical shapes.

Everything is timed in one process, round by round, with the same thread settings (`run_bench`).
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import XlingError
from ..model_dims import ModelDims
from ..train.precision import auto_precision_reason, autocast_factory, cpu_emulates, cpu_has_bf16, emulated_here
from ..train.session import pick_device
from ..train.trainer import Trainer, make_optimizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense bf16/fp16 tensor-core peaks from the vendors' data sheets (FLOP/s), by device-name substring.
# More specific names first (an "H100 PCIe" is also an "H100").
NOMINAL_GPU_PEAKS = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                     ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12)]


def matmul_flops_per_token(dims: ModelDims) -> float:
    """Training FLOPs per token from matmuls only: 3 x forward (backward costs two forwards)."""
    d, a, f, t = dims.d_model, dims.d_attn, dims.d_mlp, dims.seq_len
    projections = 2 * (4 * d * a + 2 * d * f)  # Q, K, V (d -> a), O (a -> d) and the two MLP matrices
    attention = 2 * 2 * a * (t + 1) / 2  # scores and weighted values; a token sees (T+1)/2 keys on average
    head = 2 * d * dims.vocab_size
    return 3 * (dims.n_layers * (projections + attention) + head)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` calls fn(i) after `warmup` untimed ones (synchronised)."""
    return timed_in_rounds({"fn": fn}, steps, warmup, device)["fn"]


def timed_in_rounds(fns: dict, steps: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Per-call seconds of each fn(i), calling them in turn (one call each per round).

    Round-robin order spreads any other load on the machine evenly over the contenders, so
    their ratio stays fair even when the absolute numbers are disturbed.
    """
    for fn in fns.values():
        for i in range(warmup):
            fn(i)
    synchronize(device)
    times = {name: [] for name in fns}
    for i in range(warmup, warmup + steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn(i)
            if isinstance(out, torch.Tensor):
                out.item()  # the step's work is done when its loss is known
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def _gemm(device: torch.device, dtype: torch.dtype, m: int, k: int, n: int):
    """A function timing nothing but C = A @ B (m x k times k x n, preallocated C)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    c = torch.empty(m, n, device=device, dtype=dtype)

    def gemm(_):
        torch.mm(a, b, out=c)

    return gemm


def step_matmuls(dims: ModelDims, rows: int, dtype: torch.dtype, device: torch.device):
    """A function running every matmul of one training step on `rows` tokens, and nothing else.

    Forward and backward GEMMs of the Q/K/V (one GEMM), O, MLP and head projections
    ([rows, k] @ [k, n], then grad_input [rows, n] @ [n, k] and grad_weight [n, rows] @ [rows, k]),
    and attention as batched [T, T] matmuls (2 forward, 4 backward), at full size. Its time is a
    floor for any implementation of the model on this machine: what is left of a step is the rest.
    """
    d, a, t = dims.d_model, dims.d_attn, dims.seq_len
    hd, batch = dims.d_head, max(1, rows // t) * dims.n_heads
    linears = [(d, 3 * a), (a, d), (d, dims.d_mlp), (dims.d_mlp, d)] * dims.n_layers + [(d, dims.vocab_size)]
    shapes = [s for k, n in linears for s in ((rows, k, n), (rows, n, k), (n, rows, k))]
    shapes += [(batch, t, hd, t)] * (2 * dims.n_layers) + [(batch, t, t, hd)] * (4 * dims.n_layers)

    def operands(shape):
        *b, m, k, n = shape
        return (torch.randn(*b, m, k, device=device).to(dtype), torch.randn(*b, k, n, device=device).to(dtype),
                torch.empty(*b, m, n, device=device, dtype=dtype))

    products = [operands(shape) for shape in shapes]

    def matmuls(_):
        for a, b, c in products:
            torch.matmul(a, b, out=c)

    return matmuls


def step_exponentials(dims: ModelDims, rows: int) -> int:
    """How many exponentials the softmaxes of one training step on `rows` tokens cannot do without.

    One per logit (the loss) and per attention score in the causal half; backward reuses them.
    (The GELU's tanh is left out: a rational approximation computes it without an exponential.)
    """
    t, sequences = dims.seq_len, max(1, rows // dims.seq_len)
    return rows * dims.vocab_size + sequences * dims.n_heads * t * (t + 1) // 2 * dims.n_layers


def exponentials(count: int, device: torch.device):
    """A function computing `count` fp32 exponentials with PyTorch's vectorised exp, and nothing else.

    On slices of 1 MB that stay in a core's cache, as a fused kernel would keep them: the cheapest
    way PyTorch has to do that work. Added to the step's matmuls it is a floor no implementation
    with these kernels goes below, though it leaves out every other element-wise op of the step.
    """
    size = 1 << 18
    x, out = torch.randn(size, device=device), torch.empty(size, device=device)
    full, rest = divmod(count, size)

    def exps(_):
        for _ in range(full):
            torch.exp(x, out=out)
        if rest:
            torch.exp(x[:rest], out=out[:rest])

    return exps


def gemm_peak(device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]], repeats: int = 5) -> dict:
    """The best FLOP/s of C = A @ B over `shapes` (m, k, n) at `dtype`, measured here and now."""
    best = {"flops": 0.0, "shape": None}
    for m, k, n in shapes:
        flops = 2 * m * k * n / min(_timed(_gemm(device, dtype, m, k, n), repeats, 2, device))
        if flops > best["flops"]:
            best = {"flops": flops, "shape": [m, k, n]}
    return best


def _peak_shapes(dims: ModelDims, rows: int, big: int) -> list[tuple[int, int, int]]:
    """A big square GEMM (near the machine's best) and the model's own projection shapes."""
    return [(big, big, big), (rows, dims.d_model, dims.d_mlp), (rows, dims.d_mlp, dims.d_model),
            (rows, dims.d_model, 3 * dims.d_attn)]


def nominal_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in NOMINAL_GPU_PEAKS if key in name), None)


def machine_info(device: torch.device) -> dict:
    info = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": cpu_model(), "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": _loadavg(),
            "openmp_wait": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# --------------------------------------------------------------------------- Hugging Face


def _hf_model(dims: ModelDims, device: torch.device):
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    config = GPT2Config(n_layer=dims.n_layers, n_embd=dims.d_model, n_head=dims.n_heads, n_inner=dims.d_mlp,
                        n_positions=dims.seq_len, vocab_size=dims.vocab_size, activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).to(device).train()


def _hf_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of all T targets (like xling's); older transformers shift labels themselves."""
    try:
        return model(input_ids=x, labels=y, shift_labels=y).loss
    except TypeError:
        return model(input_ids=x, labels=x).loss


def hf_step(dims: ModelDims, trainer, precision: str):
    """A training-step function for GPT2LMHeadModel: same batches, micro-batches and optimiser as xling."""
    model = _hf_model(dims, trainer.device)
    optimizer = make_optimizer(model, trainer.cfg.train.lr, trainer.device)
    autocast, _ = autocast_factory(precision, trainer.device)

    def step(i: int) -> torch.Tensor:
        micro = trainer.batches(i)
        total = torch.zeros((), device=trainer.device)
        for x, y in micro:
            with autocast():
                loss = _hf_loss(model, x, y)
            (loss / len(micro)).backward()
            total += loss.detach() / len(micro)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return step


# --------------------------------------------------------------------------- the benchmark


def _repeated(fn, times: int):
    def repeated(i):
        for _ in range(times):
            fn(i)

    return repeated


def _rate(times: list[float], tokens: int) -> dict:
    median = statistics.median(times)
    return {"tokens_per_s": tokens / median, "step_ms": 1000 * median, "step_ms_mean": 1000 * statistics.fmean(times)}


def timing_trainer(cfg: RunConfig, steps: int, cache_dir: Path | None = None) -> Trainer:
    """A Trainer of `cfg` built and prepared as `xling train` would, for `steps` steps to time: its data plan covers
    them, its schedule warns of nothing (it times nothing), and its run directory is one it never writes."""
    cfg = copy.deepcopy(cfg)
    cfg.train.steps = steps
    cfg.train.warmup = min(cfg.train.warmup, steps - 1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "bench", cache_dir, tested=False)
        trainer.prepare(resume=False)
    return trainer


def run_bench(cfg: RunConfig, steps: int = 20, warmup: int = 3, hf: bool = True, cache_dir: Path | None = None,
              log=None, peak_size: int = 0) -> dict:
    """Benchmark one config's training step; returns the JSON-able result.

    (Longer than 60 lines on purpose: the timed rounds of every contender stay in one place, so that what
    is compared with what, and in which order, reads top to bottom.)

    What is measured, all in one process with the same thread settings:
    - xling's real training step (`Trainer.train_step`: data, forward, backward, Adam) on the
      config's data, and separately the data path alone (`Trainer.batches`);
    - the step's matmuls alone (`step_matmuls`) and, on a CPU, its unavoidable exponentials alone
      (`step_exponentials`): Hugging Face's step over the first is the ceiling of the ratio, over
      both the ceiling attainable with PyTorch's exp;
    - the peak: the best rate of a few GEMMs at the step's dtype on this machine, timed before and
      in the same rounds as the steps;
    - MFU = matmul FLOPs per token x tokens/s / peak. Only matmuls count (Q/K/V/O projections,
      attention scores and values over the causal half, MLP, output head; x3 for forward +
      backward): embedding lookups, norms, softmax and the optimiser get no credit;
    - `transformers`' GPT2LMHeadModel with the same layers, width, heads, MLP width, sequence,
      vocabulary, untied head, no dropout, batch and optimiser, in fp32 and in bf16 autocast
      (bf16 only where the device runs it natively: `native_precisions`);
      ratio = xling tokens/s / the faster of the two.

    Everything is timed in turn, round by round: the steps of xling and of Hugging Face GPT-2 and
    the peak GEMM, so that on a shared machine all of them see the same conditions. Step rates
    are medians over the rounds; the peak is the best GEMM rate seen. `peak_size`: side of the
    square GEMM among the peak candidates (default 2048 on CPU, 8192 on GPU). `log(line)` is told
    what is being timed (the CLI passes a print to stderr).
    """
    log = log or (lambda _: None)
    _refuse_emulated(cfg)
    trainer = timing_trainer(cfg, warmup + steps, cache_dir)
    dims, device = trainer.model.dims, trainer.device
    tokens = cfg.train.batch_size * dims.seq_len
    hf_precisions, hf_error = _hf_precisions(hf and dims.d_attn == dims.d_model, device)
    if hf and dims.d_attn != dims.d_model:
        hf_error = "GPT2LMHeadModel's attention is always d_model wide; this model's is not (no identical shapes)"
    precisions = list(dict.fromkeys([trainer.precision, *hf_precisions]))
    big = peak_size or (8192 if device.type == "cuda" else 2048)
    shapes = _peak_shapes(dims, tokens // cfg.train.grad_accum, big)
    log(f"choosing the peak GEMM shape ({', '.join(precisions)}) ...")
    peaks = {p: gemm_peak(device, DTYPES[p], shapes) for p in precisions}

    rows, n_exps = tokens // cfg.train.grad_accum, step_exponentials(dims, tokens // cfg.train.grad_accum)
    contenders = {"xling": trainer.train_step,
                  "matmuls": _repeated(step_matmuls(dims, rows, DTYPES[trainer.precision], device), cfg.train.grad_accum)}
    if device.type == "cpu":  # on a GPU, exponentials and tensor-core GEMMs can overlap: no additive floor
        contenders["exponentials"] = _repeated(exponentials(n_exps, device), cfg.train.grad_accum)
    contenders.update({f"hf {p}": hf_step(dims, trainer, p) for p in hf_precisions})
    contenders.update({f"gemm {p}": _gemm(device, DTYPES[p], *peaks[p]["shape"]) for p in precisions})
    log(f"timing {steps} round{'' if steps == 1 else 's'} of {', '.join(contenders)} ...")
    times = timed_in_rounds(contenders, steps, warmup, device)
    for p, peak in peaks.items():  # the peak is the best rate seen (a conservative MFU denominator)
        m, k, n = peak["shape"]
        peak["flops"] = max(peak["flops"], 2 * m * k * n / min(times[f"gemm {p}"]))
        peak["median_flops"] = 2 * m * k * n / statistics.median(times[f"gemm {p}"])  # under the steps' conditions

    xling = {"precision": trainer.precision, **_rate(times["xling"], tokens)}
    xling["data_ms"] = 1000 * statistics.median(_timed(trainer.batches, steps, 0, device))
    xling["data_share"] = xling["data_ms"] / xling["step_ms"]
    xling["matmuls_ms"] = 1000 * statistics.median(times["matmuls"])
    xling["matmul_share"] = xling["matmuls_ms"] / xling["step_ms"]
    if "exponentials" in times:
        xling["exponentials"] = n_exps * cfg.train.grad_accum
        xling["exponentials_ms"] = 1000 * statistics.median(times["exponentials"])
    result = {"machine": machine_info(device), "device": str(device),
              "shape": {"preset": cfg.model.preset, "n_layers": dims.n_layers, "d_model": dims.d_model,
                        "n_heads": dims.n_heads, "d_mlp": dims.d_mlp, "seq_len": dims.seq_len,
                        "vocab": dims.vocab_size, "batch": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum,
                        "parameters": trainer.model.num_parameters()},
              "matmul_flops_per_token": matmul_flops_per_token(dims), "steps": steps, "warmup": warmup,
              "peaks": peaks, "nominal_peak": nominal_peak(device), "xling": xling,
              "hf": {"error": hf_error} if hf_error else None, "ratio": None,
              "skipped_precisions": native_precisions(device)[1]}
    if cfg.train.precision == "auto":  # (on a CPU: measured, README)
        result["precision_auto"] = {"precision": trainer.precision, "why": auto_precision_reason(device, cache_dir)}
    _add_hf_and_mfu(result, times, tokens, hf_precisions)
    result["machine"]["load_average_end"] = _loadavg()
    return result


def _add_hf_and_mfu(result: dict, times: dict, tokens: int, hf_precisions: list[str]) -> None:
    """Hugging Face's rates and xling's ratio to the faster one, then every contender's MFU, into `result`."""
    xling = result["xling"]
    if hf_precisions:
        result["hf"] = {p: {"precision": p, **_rate(times[f"hf {p}"], tokens)} for p in hf_precisions}
        best = max(result["hf"].values(), key=lambda r: r["tokens_per_s"])
        result["ratio"], result["hf_best"] = xling["tokens_per_s"] / best["tokens_per_s"], best["precision"]
        # No implementation whose step does these matmuls can beat Hugging Face by more than this.
        result["ratio_ceiling"] = best["step_ms"] / xling["matmuls_ms"]
        if "exponentials_ms" in xling:  # ... nor, with PyTorch's exp, by more than this
            result["ratio_attainable"] = best["step_ms"] / (xling["matmuls_ms"] + xling["exponentials_ms"])
    for run in [xling, *(result["hf"].values() if hf_precisions else [])]:
        achieved = result["matmul_flops_per_token"] * run["tokens_per_s"]
        run["mfu"] = achieved / result["peaks"][run["precision"]]["flops"]
        if result["nominal_peak"]:
            run["mfu_nominal"] = achieved / result["nominal_peak"]


def native_precisions(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions this device multiplies natively, and why the others are skipped.

    Emulated bf16 on a CPU without AVX512-BF16 or AMX is many times slower than fp32 (a 2048^3
    GEMM takes minutes on 2 cores), so timing it would say nothing but stall the bench.
    """
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return ["fp32", "bf16"], {}
        return ["fp32", "fp16"], {"bf16": "not supported by this GPU (fp16 is timed instead)"}
    if cpu_has_bf16():
        return ["fp32", "bf16"], {}
    why = cpu_emulates("bf16") or "xling reads x86 CPU flags only, and cannot read this CPU's"
    return ["fp32"], {"bf16": f"not known to be native ({why}): emulated bf16 is slower than fp32"}


def _refuse_emulated(cfg: RunConfig) -> None:
    """One line instead of a bench that stalls for minutes on emulated GEMMs (a precision asked for
    with --train.precision that this CPU does not multiply natively; auto never chooses one)."""
    precision = cfg.train.precision
    why = emulated_here(precision, pick_device(cfg.train.device))
    if why:
        raise XlingError(f"train.precision {precision} is emulated on this CPU ({why}): the bench times only what "
                         "it runs natively; use --train.precision auto or fp32")


def _hf_precisions(wanted: bool, device: torch.device) -> tuple[list[str], str | None]:
    """The precisions to time Hugging Face GPT-2 in (those this device runs natively), or why it cannot be timed."""
    if not wanted:
        return [], None
    try:
        import transformers  # noqa: F401
    except ImportError:
        return [], "transformers is not installed: pip install 'xling[bench]' (or transformers)"
    return native_precisions(device)[0], None
