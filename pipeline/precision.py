"""Reduced precision on the CPU is only a speed-up where oneDNN has native kernels for it.

Measured on an AVX2-only AMD EPYC (torch 2.14.1): no bf16 kernels, and head training with
`--precision bf16` ran ~5x slower than fp32 (bench/results/head_cpu_bf16.md beside head_cpu.md).
On the 2026-11-26 machine bf16 was faster: 203.2 vs 244.8 s for the head (head_cpu_2026-11-26.md)."""
from __future__ import annotations

import logging

import torch

from pipeline.errors import PipelineError


def resolve_device(name: str, key: str) -> torch.device:
    """`auto` -> cuda when available, else cpu. An explicit `cuda` without one is an error naming the setting
    `key`, never a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{key}=cuda but torch sees no CUDA device: set {key} to auto or cpu")
    return torch.device(name)


def cpu_has_kernels(precision: str) -> bool:
    """True when oneDNN reports native support for `precision` (bf16: AVX512-BF16 / AMX; fp16: AVX512-FP16 / AMX-FP16)."""
    query = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    try:
        return bool(getattr(torch.ops.mkldnn, query)())
    except (AttributeError, RuntimeError):  # private ops: absent from some builds
        return False


def warn_if_emulated(device: torch.device, precision: str, key: str, log: logging.Logger) -> None:
    """One warning when a half-precision setting will run emulated (slower than fp32) on this CPU."""
    if device.type == "cpu" and precision in ("bf16", "fp16") and not cpu_has_kernels(precision):
        log.warning("%s=%s on a CPU without native %s matmul kernels: it runs emulated, several times "
                    "slower than fp32; set %s=fp32", key, precision, precision, key)
