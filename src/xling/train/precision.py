"""Which precision a model multiplies in: what the device runs natively, what pays, and autocast.

On a CPU, bf16 and fp16 are native only with the right instructions (AVX512-BF16 or AMX; AVX512-FP16 or
AMX-FP16); without them oneDNN emulates them, many times slower than fp32. Native is not enough: an Intel
Xeon with AVX512-BF16 but no AMX multiplies bf16 at half its fp32 rate (README, Performance), so
precision auto takes bf16 on a CPU only where a measured GEMM says it pays (`cpu_bf16_pays`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import statistics
import time

import torch

from ..config import PRECISIONS
from ..errors import XlingError
from ..fsio import atomic_write_json, default_cache_dir, json_key, read_json

log = logging.getLogger(__name__)


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which bf16 matmuls are emulated.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def _onednn_cap() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def onednn_cap_without_bf16() -> str:
    """The oneDNN ISA cap set in the environment if it is below native bf16 (e.g. "AVX2"), else ""."""
    cap = _onednn_cap()
    return cap if cap in _ONEDNN_ISAS_WITHOUT_BF16 else ""


def _cpu_flags() -> list[str] | None:
    """The x86 CPU's feature flags (Linux); None where they cannot be read (another OS or architecture)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return line.split(":", 1)[-1].split() if line else None


# The x86 flags with which oneDNN multiplies a precision natively.
_NATIVE_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}


def cpu_has_bf16() -> bool:
    """Whether the CPU is known to multiply bf16 natively (AVX512-BF16 or AMX). Without it, bf16
    autocast is emulated and slower than fp32. A oneDNN ISA cap below AVX512_CORE_BF16 counts as
    without; so does a CPU whose flags cannot be read (precision auto then trains in fp32)."""
    return not onednn_cap_without_bf16() and bool(_NATIVE_FLAGS["bf16"] & set(_cpu_flags() or []))


def cpu_emulates(precision: str) -> str:
    """Why this CPU multiplies `precision` only by emulation, many times slower than fp32 (fp16
    training at cpu-xs: 10x, README), or "" where it runs natively or nobody knows (fp32 always;
    a CPU whose flags cannot be read, e.g. ARM, is given the benefit of the doubt)."""
    cap, flags = _onednn_cap(), _cpu_flags()
    if precision == "bf16" and cap in _ONEDNN_ISAS_WITHOUT_BF16:
        return f"the oneDNN ISA cap {cap} turns native bf16 off"
    if precision == "fp16" and cap in _ONEDNN_ISAS_WITHOUT_BF16 | {"AVX512_CORE_BF16"}:  # fp16 starts above it
        return f"the oneDNN ISA cap {cap} turns native fp16 off"
    if flags is None or precision not in _NATIVE_FLAGS or _NATIVE_FLAGS[precision] & set(flags):
        return ""
    return {"bf16": "this CPU has no AVX512-BF16 or AMX", "fp16": "this CPU has no AVX512-FP16 or AMX-FP16"}[precision]


# bf16 autocast adds dtype copies to every step, so its GEMMs must beat fp32's by this much to pay
# (measured: 2-4x on Zen 4, where bf16 steps are 1.9x faster; 0.5x on an Intel Xeon without AMX).
BF16_MIN_SPEEDUP = 1.25
PROBE_SHAPE = (2048, 512, 512)  # rows x inner x outer: a projection of the CPU presets' size
_PROBE_ROUNDS = 7
_MEASURED: dict[str, dict] = {}  # this process's answers, by machine key


def _probe_rates() -> dict[str, float]:
    """GFLOP/s of one PROBE_SHAPE GEMM in fp32 and in bf16: medians over rounds that time one of each (other load
    on the machine hits both alike), after a round that warms up (oneDNN builds its kernels on first use)."""
    m, k, n = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)  # (not the global generator: a run's initial weights depend on it)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    operands = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    seconds = {name: [] for name in operands}
    for round_ in range(_PROBE_ROUNDS + 1):
        for name, (x, y) in operands.items():
            start = time.perf_counter()
            torch.mm(x, y)
            if round_:
                seconds[name].append(time.perf_counter() - start)
    return {name: 2 * m * k * n / statistics.median(t) / 1e9 for name, t in seconds.items()}


def _machine() -> dict:
    """What a measurement holds for: this CPU, its flags and ISA caps, this torch (not the thread count: one answer
    for the machine, whether a run trains with one thread or all)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return {"cpu": model, "flags": sorted(_cpu_flags() or []), "onednn_cap": _onednn_cap(),
            "aten_capability": os.environ.get("ATEN_CPU_CAPABILITY", ""), "torch": torch.__version__}


def _well_formed(entry) -> bool:
    return (isinstance(entry, dict) and type(entry.get("bf16_pays")) is bool and type(entry.get("measured")) is str
            and all(type(entry.get(f"{p}_gflops")) is float for p in ("fp32", "bf16")))


def cpu_bf16_measurement() -> dict:
    """Whether bf16 pays on this CPU: {"fp32_gflops", "bf16_gflops", "bf16_pays", "measured", "cache"}, measured once
    a machine and kept in the cache (CACHE/cpu-precision.json, under a lock: a study's workers starting together
    measure once and agree). Every run on the machine then takes the same precision under auto."""
    key = json_key(_machine())
    if key in _MEASURED:
        return _MEASURED[key]
    path, entry = default_cache_dir() / "cpu-precision.json", None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            stack.callback(os.close, lock)
            with contextlib.suppress(OSError):  # (a file system without locks: measure, maybe twice)
                fcntl.flock(lock, fcntl.LOCK_EX)
            known = read_json(path, default={})  # (damaged or someone else's: measured again, written anew)
            entry = known.get(key)
            if not _well_formed(entry):
                entry = _measure()
                atomic_write_json(path, {**{k: v for k, v in known.items() if _well_formed(v)}, key: entry})
    except (OSError, XlingError) as exc:  # an unwritable cache: this process measures for itself
        log.debug(f"cannot keep the CPU's precision measurement in {path} ({exc})")
    if not _well_formed(entry):
        entry = _measure()
    _MEASURED[key] = {**entry, "cache": str(path)}
    return _MEASURED[key]


def _measure() -> dict:
    rates = _probe_rates()
    return {"fp32_gflops": float(rates["fp32"]), "bf16_gflops": float(rates["bf16"]),
            "bf16_pays": rates["bf16"] >= BF16_MIN_SPEEDUP * rates["fp32"], "probe": list(PROBE_SHAPE),
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def cpu_bf16_pays() -> bool:
    """Whether precision auto takes bf16 on this CPU: native (`cpu_has_bf16`; an emulated probe would take minutes)
    and measured at least BF16_MIN_SPEEDUP times faster than fp32 (`cpu_bf16_measurement`)."""
    return cpu_has_bf16() and cpu_bf16_measurement()["bf16_pays"]


def auto_precision_reason(device: torch.device) -> str:
    """Why precision auto takes what it takes on this device, in words (for the bench and the README's claims)."""
    if device.type != "cpu":
        return "bf16 where the GPU supports it, else fp16"
    if not cpu_has_bf16():
        return f"fp32: bf16 is not native here ({cpu_emulates('bf16') or 'flags unreadable'})"
    m = cpu_bf16_measurement()
    verdict = "bf16" if m["bf16_pays"] else "fp32"
    return (f"{verdict}: a {'x'.join(map(str, PROBE_SHAPE))} GEMM runs at {m['bf16_gflops']:,.0f} GFLOP/s in bf16 "
            f"against {m['fp32_gflops']:,.0f} in fp32 (bf16 from {BF16_MIN_SPEEDUP}x; measured {m['measured']}, "
            f"kept in {m['cache']})")


def runs_natively(precision: str, device: torch.device) -> bool:
    """Whether this device multiplies `precision` without emulation (a GPU: bf16 where it supports it)."""
    if device.type == "cuda":
        return precision != "bf16" or torch.cuda.is_bf16_supported()
    return not cpu_emulates(precision)


def run_precision(configured: str, trained_in: str | None, device: torch.device) -> str:
    """The precision to resume or load a run in: its configured one, and under auto the one it trained in (run.json's
    `precision`) where this device runs that natively. So a resume and an evaluation multiply as the run did, even
    where auto would choose otherwise here (another machine, or bf16 measured not to pay on this one)."""
    if configured == "auto" and trained_in in PRECISIONS and runs_natively(trained_in, device):
        return trained_in
    return configured


def emulated_here(precision: str, device: torch.device) -> str:
    """`cpu_emulates` on a CPU device; "" on a GPU."""
    return cpu_emulates(precision) if device.type == "cpu" else ""


def warn_if_emulated(precision: str, device: torch.device) -> None:
    """One warning line where this CPU would emulate the precision a run asks for (training and
    evaluation alike): it then runs many times slower, silently."""
    why = emulated_here(precision, device)
    if why:
        auto = autocast_factory("auto", device)[1]
        log.warning(f"train.precision {precision} is emulated on this CPU ({why}): many times slower than "
                    f"precision auto ({auto} here) or fp32")


def autocast_factory(precision: str, device: torch.device):
    """A zero-argument callable returning the autocast context for this precision.

    "auto": bf16 on GPUs that support it (else fp16, with loss scaling) and on CPUs whose native bf16 is
    measured faster than fp32 (`cpu_bf16_pays`); fp32 on other CPUs.
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if device.type == "cpu" and cpu_bf16_pays() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision
