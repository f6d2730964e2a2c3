"""Which precision a model multiplies in: what the device runs natively, and autocast.

On a CPU, bf16 and fp16 are native only with the right instructions (AVX512-BF16 or AMX; AVX512-FP16 or
AMX-FP16); without them oneDNN emulates them, many times slower than fp32.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

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

    "auto": bf16 on GPUs that support it (else fp16, with loss scaling) and on CPUs with native
    bf16 (there faster than fp32, README, Performance); fp32 on other CPUs, which emulate bf16.
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), precision
