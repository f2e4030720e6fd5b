"""int8 CPU path for the built-in backbones: ONNX Runtime static quantization (QDQ, per-channel weights).

Why ONNX Runtime: measured on the 2-core AVX512-VNNI EPYC (bench/results/int8_cpu.md), ResNet-18 at
224x224, batch 32: fp32 torch channels_last 20.2 ms/frame, fp32 onnxruntime 15.9, int8 onnxruntime
QDQ 4.7, int8 torch.ao FX (x86) 4.3, torch.ao (onednn) 11.3. torch.ao's eager/FX quantization is
deprecated in favour of torchao's PT2E flow, while onnxruntime's quantizer is maintained and already
runs the retinaface_mnet body here, so one runtime serves both backbones.

Calibration is a fixed, shipped set: the demo's 16 face photos (`pipeline/assets/faces/`), detected
and aligned exactly as extract aligns video frames, plus their mirror images (32 crops). Fixed, so
the int8 model, and thus the features, do not depend on which videos a run happens to extract.
Fidelity is measured apart from it, on the dataset's own crops (`measure_fidelity`, called by extract
on each shard's first batch and recorded in the shard's attributes).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
CALIBRATION_BATCH = 8


def cache_dir() -> Path:
    """Where quantized graphs are kept between runs (`CEFLNET_CACHE`, else the user's cache folder)."""
    root = os.environ.get("CEFLNET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ceflnet"
    return Path(root) / "int8"


def cached(key: dict, build: Callable[[], bytes]) -> bytes:
    """The int8 graph for `key` from the cache, else `build()` written there atomically.

    ResNet-18's export + calibration take ~20 s on 2 cores, more than int8 saves on a dozen videos;
    the key holds everything the graph depends on (weights hash, calibration inputs' hash, versions)."""
    from pipeline.io import atomic_path

    path = cache_dir() / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24] + ".onnx")
    if path.is_file():
        return path.read_bytes()
    model = build()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(model)
    except OSError as err:  # a read-only home: the run goes on, quantizing again next time
        log.warning("cannot keep the int8 graph in %s (%s): it is rebuilt on every run; set CEFLNET_CACHE",
                    path.parent, err)
    return model


def calibration_key(inputs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.float32).tobytes()).hexdigest()


def calibration_crops(size: int, margin: float) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB aligned crops of the shipped face photos and their mirrors."""
    from pipeline.align import align
    from pipeline.demo.assets import load_faces
    from pipeline.detector import RetinaFaceDetector

    det = RetinaFaceDetector(det_size=640, device="cpu", runtime="onnxruntime", threads=1)
    crops = []
    for images in load_faces().values():
        for bgr in images:
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            found = det.detect([rgb])[0]
            if not len(found):
                raise RuntimeError("a shipped calibration face was not detected: pipeline/assets/faces is damaged")
            wh = found.boxes[:, 2:] - found.boxes[:, :2]
            crop = align(rgb, found.landmarks[int(np.argmax(wh.prod(axis=1)))], size, margin)
            crops += [crop, np.ascontiguousarray(crop[:, ::-1])]
    return np.stack(crops)


def export_onnx(module: nn.Module, size: int) -> bytes:
    """fp32 ONNX graph of `module` with input `input` (B, 3, size, size) and one output `features`."""
    buf = io.BytesIO()
    x = torch.zeros(1, 3, size, size)
    # The TorchScript exporter (dynamo=False): no onnxscript dependency, and a plain conv graph is all it needs.
    torch.onnx.export(module.float().eval().to(memory_format=torch.contiguous_format), (x,), buf,
                      input_names=["input"], output_names=["features"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}})
    return buf.getvalue()


def quantize(model_fp32: bytes, calibration: np.ndarray) -> bytes:
    """Static int8 quantization of an ONNX graph whose one input `input` takes `calibration`'s batches.

    QDQ format with per-channel int8 weights and uint8 activations (MinMax ranges): the format
    onnxruntime fuses into its int8 conv kernels (QOperator ran 2x slower here, 9.5 vs 4.7 ms/frame).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            i = next(self.batches, None)
            return None if i is None else {"input": calibration[i:i + CALIBRATION_BATCH]}

    import onnx
    from onnx import version_converter

    model = onnx.load_from_string(model_fp32)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:  # per-channel DequantizeLinear (its `axis`) needs opset 13; the detector's graph is 11
        model = version_converter.convert_version(model, 13)
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:  # the quantizer works on files
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes()


def session(model: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class OrtInt8Features(nn.Module):
    """A backbone's int8 graph behind the torch call the extractor makes: (B, 3, H, W) float -> (B, D)."""

    def __init__(self, model: bytes, threads: int = 0):
        super().__init__()
        self.session = session(model, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) crops, got shape {tuple(x.shape)}")
        (y,) = self.session.run(["features"], {"input": x.float().contiguous().numpy()})
        return torch.from_numpy(y)


def cosine_per_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) cosine similarity of matching rows (1.0 for two zero rows)."""
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
