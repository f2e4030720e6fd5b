"""A half-precision setting that the CPU would only emulate is named in a warning, once."""
from __future__ import annotations

import logging

import torch

from pipeline import precision


def test_emulated_cpu_precision_is_warned_and_native_or_fp32_is_not(monkeypatch, caplog):
    log = logging.getLogger("test.precision")
    monkeypatch.setattr(precision, "cpu_has_kernels", lambda p: False)
    with caplog.at_level(logging.WARNING, logger="test.precision"):
        precision.warn_if_emulated(torch.device("cpu"), "bf16", "train_head.precision", log)
        precision.warn_if_emulated(torch.device("cpu"), "fp32", "train_head.precision", log)
        precision.warn_if_emulated(torch.device("cuda"), "bf16", "train_head.precision", log)
    assert [r.getMessage().split(" on a CPU")[0] for r in caplog.records] == ["train_head.precision=bf16"]
    monkeypatch.setattr(precision, "cpu_has_kernels", lambda p: True)
    caplog.clear()
    precision.warn_if_emulated(torch.device("cpu"), "bf16", "extract.precision", log)
    assert not caplog.records

