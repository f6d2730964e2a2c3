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
import math
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import PRECISIONS
from ..errors import XlingError
from ..fsio import atomic_write_json, default_cache_dir, json_key, make_dirs, read_json

log = logging.getLogger(__name__)


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which bf16 matmuls are emulated.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def _onednn_cap() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def onednn_cap_without_bf16() -> str:
    """The oneDNN ISA cap set in the environment if it is below native bf16 (e.g. "AVX2"), else ""."""
    cap = _onednn_cap()
    return cap if cap in _ONEDNN_ISAS_WITHOUT_BF16 else ""


def _cpuinfo(field: str) -> str | None:
    """A field of /proc/cpuinfo's first processor (Linux); None where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((value.strip() for name, _, value in (line.partition(":") for line in f)
                         if name.strip() == field), None)
    except OSError:
        return None


def _cpu_flags() -> list[str] | None:
    """The x86 CPU's feature flags (Linux); None where they cannot be read (another OS or architecture)."""
    flags = _cpuinfo("flags")
    return flags.split() if flags is not None else None


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
_MEASURED: dict[tuple[str, str], dict] = {}  # this process's answers, by (cache file, machine key)


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


def _machine_key() -> str:
    """What a measurement holds for: this CPU (model, flags, ISA caps), this torch and this probe; not the thread
    count (one answer for the machine, whether a run trains with one thread or all)."""
    return json_key({"cpu": _cpuinfo("model name") or "", "flags": sorted(_cpu_flags() or []),
                     "onednn_cap": _onednn_cap(), "aten_capability": os.environ.get("ATEN_CPU_CAPABILITY", ""),
                     "torch": torch.__version__, "probe": PROBE_SHAPE})


def _well_formed(entry) -> bool:
    return (isinstance(entry, dict) and type(entry.get("measured")) is str
            and all(type(r := entry.get(f"{p}_gflops")) is float and 0 < r < math.inf for p in ("fp32", "bf16")))


def _known(path: Path) -> dict:
    """The cache file's well-formed measurements by machine key ({} where it is missing, unreadable or damaged)."""
    try:
        return {key: entry for key, entry in read_json(path, default={}).items() if _well_formed(entry)}
    except OSError:
        return {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an flock beside the cache file (on a file system without locks: nothing held)."""
    make_dirs(path.parent)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cpu_bf16_measurement(cache_dir: Path | None = None) -> dict:
    """This CPU's probe GEMM rates, {"fp32_gflops", "bf16_gflops", "measured", "cache"}: measured once a machine and
    kept in CACHE/cpu-precision.json ("cache": that file, or "" where it could not be kept), so every run on the
    machine gets the same answer under auto. Measured under a lock, and a measurement found there after one's own wins
    over it: a study's workers, or torchrun's processes, starting together measure once and agree (without locks,
    nearly always). A read-only cache is still read."""
    path = Path(cache_dir or default_cache_dir()) / "cpu-precision.json"
    key = _machine_key()
    if (str(path), key) not in _MEASURED:
        entry, kept = _known(path).get(key), True
        if entry is None:
            try:
                entry, kept = _measured_under_lock(path, key)
            except (OSError, XlingError) as exc:  # no lock file (an unwritable cache): this process measures alone
                _not_kept(path, exc)
                entry, kept = _measure(), False
        _MEASURED[str(path), key] = {**entry, "cache": str(path) if kept else ""}
    return _MEASURED[str(path), key]


def _measured_under_lock(path: Path, key: str) -> tuple[dict, bool]:
    """The machine's measurement in the cache file, else measured now and written there; and whether it is kept."""
    with _locked(path):
        entry = _known(path).get(key)
        if entry is None:
            mine = _measure()
            known = _known(path)  # (others' measurements kept, damaged ones dropped)
            entry = known.get(key)  # (written meanwhile, by a process that took no lock: it wins)
            if entry is None:
                try:
                    atomic_write_json(path, {**known, key: mine})
                except (OSError, XlingError) as exc:
                    _not_kept(path, exc)
                    return mine, False
                entry = mine
    return entry, True


def _not_kept(path: Path, exc: Exception) -> None:
    log.debug(f"cannot keep the CPU's precision measurement in {path} ({exc})")


_PROBE_NAME = "x".join(map(str, PROBE_SHAPE))  # "2048x512x512"


def _rates_in_words(m: dict) -> str:
    return f"{m['bf16_gflops']:,.0f} GFLOP/s in bf16 against {m['fp32_gflops']:,.0f} in fp32"


def _measure() -> dict:
    rates = _probe_rates()
    return {"fp32_gflops": float(rates["fp32"]), "bf16_gflops": float(rates["bf16"]), "probe": list(PROBE_SHAPE),
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def cpu_bf16_pays(cache_dir: Path | None = None) -> bool:
    """Whether precision auto takes bf16 on this CPU: native (`cpu_has_bf16`; an emulated probe would take minutes)
    and measured at least BF16_MIN_SPEEDUP times faster than fp32 (`cpu_bf16_measurement`)."""
    if not cpu_has_bf16():
        return False
    m = cpu_bf16_measurement(cache_dir)
    return m["bf16_gflops"] >= BF16_MIN_SPEEDUP * m["fp32_gflops"]


def _gpu_has_bf16() -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)  # (a V100 or T4 emulates it: fp16 there)
    except TypeError:  # torch before 2.3 has no such argument (and counts no emulation)
        return torch.cuda.is_bf16_supported()


def auto_precision(device: torch.device, cache_dir: Path | None = None) -> str:
    """What precision auto multiplies in on this device: bf16 on a GPU that multiplies it natively, else fp16 (with
    loss scaling); on a CPU bf16 where it is native and measured to pay (`cpu_bf16_pays`), else fp32."""
    if device.type == "cuda":
        return "bf16" if _gpu_has_bf16() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_bf16_pays(cache_dir) else "fp32"


def auto_precision_reason(device: torch.device, cache_dir: Path | None = None) -> str:
    """What precision auto takes on this device and why, in words (the bench prints it)."""
    chosen = auto_precision(device, cache_dir)
    if device.type == "cuda":
        return f"{chosen}: this GPU {'multiplies bf16 natively' if chosen == 'bf16' else 'has no native bf16'}"
    if not cpu_has_bf16():
        return f"{chosen}: bf16 is not native here ({cpu_emulates('bf16') or 'the CPU flags cannot be read'})"
    m = cpu_bf16_measurement(cache_dir)
    return (f"{chosen}: a {_PROBE_NAME} GEMM runs at {_rates_in_words(m)} (bf16 from {BF16_MIN_SPEEDUP}x; measured {m['measured']}, "
            + (f"kept in {m['cache']})" if m["cache"] else "not kept: the cache takes no files)"))


def runs_natively(precision: str, device: torch.device) -> bool:
    """Whether this device is known to multiply `precision` without emulation: a GPU fp32, fp16 and bf16 where it
    has it; a CPU fp32, and bf16 or fp16 where its flags say so (not where they cannot be read, as `cpu_has_bf16`)."""
    if device.type == "cuda":
        return precision != "bf16" or _gpu_has_bf16()
    return precision == "fp32" or (_cpu_flags() is not None and not cpu_emulates(precision))


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


def warn_if_emulated(precision: str, device: torch.device, cache_dir: Path | None = None) -> None:
    """One warning line where this CPU would emulate the precision a run asks for (training and
    evaluation alike): it then runs many times slower, silently."""
    why = emulated_here(precision, device)
    if why:
        auto = auto_precision(device, cache_dir)
        log.warning(f"train.precision {precision} is emulated on this CPU ({why}): many times slower than "
                    f"precision auto ({auto} here) or fp32")


def warn_if_slower(precision: str, device: torch.device, cache_dir: Path | None = None) -> None:
    """One warning line where a run asks for bf16 on a CPU that multiplies it natively but was measured slower than
    fp32 (an Intel Xeon without AMX): it trains, slower than auto would."""
    if device.type == "cpu" and precision == "bf16" and cpu_has_bf16() and not cpu_bf16_pays(cache_dir):
        m = cpu_bf16_measurement(cache_dir)
        log.warning(f"train.precision bf16 is slower than fp32 on this CPU (a {_PROBE_NAME} GEMM: {_rates_in_words(m)}): precision auto "
                    "takes fp32 here")


def resolve_precision(precision: str, device: torch.device, cache_dir: Path | None = None) -> str:
    """The precision itself, with "auto" resolved (`auto_precision`; its CPU measurement kept in `cache_dir`)."""
    return auto_precision(device, cache_dir) if precision == "auto" else precision


def autocast_factory(precision: str, device: torch.device, cache_dir: Path | None = None):
    """A zero-argument callable returning the autocast context for this precision, and the precision (`resolve_precision`)."""
    precision = resolve_precision(precision, device, cache_dir)
    if precision == "fp32":
        return contextlib.nullcontext, "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision
