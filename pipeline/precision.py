"""Reduced precision on the CPU is only a speed-up where the CPU has bf16 matmul kernels.

Measured on an AVX2-only AMD EPYC (torch 2.14.1): oneDNN has no bf16 GEMM for it, and a bf16 matmul
ran at 7.6 GFLOP/s against 60 in fp32, so the head's training step took 141 ms instead of 28 ms.
On CPUs with AVX512-BF16 or AMX it was 1.2-1.8x faster than fp32 (bench/results/)."""
from __future__ import annotations

import logging

import torch


def cpu_has_bf16_kernels() -> bool:
    """True when oneDNN reports native bf16 support (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private op: absent from some builds
        return False


def warn_if_emulated(device: torch.device, precision: str, key: str, log: logging.Logger) -> None:
    """One warning when a half-precision setting will run emulated (slower than fp32) on this CPU."""
    if device.type == "cpu" and precision in ("bf16", "fp16") and not cpu_has_bf16_kernels():
        log.warning("%s=%s on a CPU without bf16 matmul kernels (no AVX512-BF16/AMX): it runs emulated, "
                    "several times slower than fp32 here; set %s=fp32", key, precision, key)
