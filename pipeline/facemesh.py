"""MediaPipe's 468-point face mesh network (`face_landmark.tflite`) as a small pure-torch module.

Why a port: the mesh gives dense, stable landmarks (eyelids, lips, brows) without mediapipe or
TensorFlow at run time; only the weights ship (`pipeline/assets/facemesh/`, Apache-2.0, converted
by `bench/facemesh_port.py --convert`, provenance and measured agreement in that folder's README).

The graph is MediaPipe's: a stride-2 3x3 stem, residual blocks of depthwise 3x3 + pointwise 1x1
with PReLU (a stride-2 block's shortcut is a 2x2 max-pool, zero-padded in channels when the width
doubles), then at 6x6 two heads, 468x(x, y, z) and a face-presence logit. TFLite semantics kept
exactly: 'SAME' convolutions of stride 2 pad the odd pixel on the bottom/right only (torch's
symmetric padding would shift every landmark), 'VALID' pools and heads.

Input: the crop as RGB scaled to [0, 1] (MediaPipe's ImageToTensorCalculator range for this model,
checked against the full FaceMesh pipeline). Output x, y are in 192-px crop pixels, z in the same
scale (relative depth). Our crop is the ArcFace-template alignment (`pipeline.align.align`) widened
by `MARGIN`, chosen so the face fills the crop as MediaPipe's own ROI does (calibration table in the
README).
"""
from __future__ import annotations

import multiprocessing
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.align import align
from pipeline.errors import MissingWeightsError

CROP = 192
MARGIN: float = 0.12
WEIGHTS = Path(__file__).resolve().parent / "assets" / "facemesh" / "face_landmark.npz"
N_POINTS = 468

# Residual blocks as (depthwise, pointwise, prelu) tensor numbers of the tflite, channels in/out, stride.
TRUNK = ((1, 2, 2, 16, 16, 1), (2, 3, 3, 16, 16, 1), (3, 4, 4, 16, 32, 2), (4, 5, 5, 32, 32, 1),
         (5, 6, 6, 32, 32, 1), (6, 7, 7, 32, 64, 2), (7, 8, 8, 64, 64, 1), (8, 9, 9, 64, 64, 1),
         (9, 10, 10, 64, 128, 2), (10, 11, 11, 128, 128, 1), (11, 12, 12, 128, 128, 1),
         (12, 13, 13, 128, 128, 2), (13, 14, 14, 128, 128, 1), (14, 15, 15, 128, 128, 1))
LANDMARK_HEAD = ((15, 16, 16, 128, 128, 2), (16, 17, 17, 128, 128, 1), (17, 18, 18, 128, 128, 1))
SCORE_HEAD = ((23, 28, 26, 128, 128, 2),)


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TFLite 'SAME' for a 3x3 kernel: stride 1 pads 1 on every side, stride 2 (even maps) 1 on bottom/right."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class _Block(nn.Module):
    """x → PReLU(x' + pw(dw(x))), x' = x, or for stride 2 a 2x2 max-pool zero-padded to `cout` channels."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, cout - cin
        self.dw = nn.Conv2d(cin, cin, 3, stride, 0, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(_same_pad(x, self.stride)))
        if self.stride == 2:
            x = F.max_pool2d(x, 2)
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return self.act(x + y)


class FaceLandmarkNet(nn.Module):
    """forward(x (N, 3, 192, 192) RGB in [0, 1]) → (landmarks (N, 468, 3) crop pixels, face score (N,) probability)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 0)
        self.stem_act = nn.PReLU(16)
        self.trunk = nn.Sequential(*(_Block(*b[3:]) for b in TRUNK))
        self.mesh_blocks = nn.Sequential(*(_Block(*b[3:]) for b in LANDMARK_HEAD))
        self.mesh_reduce, self.mesh_reduce_act = nn.Conv2d(128, 32, 1), nn.PReLU(32)
        self.mesh_block = _Block(32, 32, 1)
        self.mesh_out = nn.Conv2d(32, 3 * N_POINTS, 3)
        self.score_blocks = nn.Sequential(*(_Block(*b[3:]) for b in SCORE_HEAD))
        self.score_reduce, self.score_reduce_act = nn.Conv2d(128, 32, 1), nn.PReLU(32)
        self.score_block = _Block(32, 32, 1)
        self.score_out = nn.Conv2d(32, 1, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(self.stem_act(self.stem(_same_pad(x, 2))))
        m = self.mesh_block(self.mesh_reduce_act(self.mesh_reduce(self.mesh_blocks(x))))
        s = self.score_block(self.score_reduce_act(self.score_reduce(self.score_blocks(x))))
        landmarks = self.mesh_out(m).reshape(-1, N_POINTS, 3)
        return landmarks, torch.sigmoid(self.score_out(s).reshape(-1))

    def tflite_names(self) -> dict[str, str]:
        """Our parameter name → the tflite layer it comes from (e.g. `trunk.0.dw` → `depthwise_conv2d_1`)."""
        names = {"stem": "conv2d_1", "stem_act": "p_re_lu_1", "mesh_reduce": "conv2d_19",
                 "mesh_reduce_act": "p_re_lu_19", "mesh_out": "conv2d_21", "score_reduce": "conv2d_29",
                 "score_reduce_act": "p_re_lu_27", "score_out": "conv2d_31"}
        blocks = [(f"trunk.{i}", b) for i, b in enumerate(TRUNK)]
        blocks += [(f"mesh_blocks.{i}", b) for i, b in enumerate(LANDMARK_HEAD)]
        blocks += [(f"score_blocks.{i}", b) for i, b in enumerate(SCORE_HEAD)]
        blocks += [("mesh_block", (18, 20, 20)), ("score_block", (24, 30, 28))]
        for prefix, (dw, pw, act, *_) in blocks:
            names.update({f"{prefix}.dw": f"depthwise_conv2d_{dw}", f"{prefix}.pw": f"conv2d_{pw}",
                          f"{prefix}.act": f"p_re_lu_{act}"})
        return names


@lru_cache(maxsize=4)
def load_net(device: str = "cpu") -> FaceLandmarkNet:
    """The network with the shipped weights (float16 in the file, exactly the tflite's), eval mode, one per device."""
    if not WEIGHTS.is_file():
        raise MissingWeightsError(f"face mesh weights missing: {WEIGHTS} (reconvert with bench/facemesh_port.py --convert)")
    net = FaceLandmarkNet()
    with np.load(WEIGHTS) as npz:
        state = {}
        for ours, theirs in net.tflite_names().items():
            for kind in ("weight", "bias"):
                if f"{ours}.{kind}" in net.state_dict():
                    state[f"{ours}.{kind}"] = torch.from_numpy(npz[f"{theirs}.{kind}"].astype(np.float32))
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


def mesh_crop(frame_rgb: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The network's (192, 192, 3) uint8 RGB input: the ArcFace-template alignment widened by MARGIN."""
    return align(frame_rgb, landmarks5, CROP, MARGIN)


def mesh_landmarks(crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 192, 192, 3) uint8 RGB crops → (N, 468, 3) float32 landmarks in crop pixels."""
    return mesh_and_scores(crops, batch_size)[0]


def mesh_and_scores(crops: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, 192, 192, 3) uint8 RGB crops → (N, 468, 3) float32 landmarks in crop pixels and (N,) the network's face
    probability (what MediaPipe thresholds to decide that the crop still holds a face)."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (CROP, CROP, 3):
        raise ValueError(f"expected (N, {CROP}, {CROP}, 3) crops, got {crops.shape}")
    if multiprocessing.parent_process() is not None:
        # a decode worker beside the process running the backbone, which already takes every core: one thread each
        torch.set_num_threads(1)
    net = load_net("cpu")
    out = np.zeros((len(crops), N_POINTS, 3), np.float32)
    scores = np.zeros(len(crops), np.float32)
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[i:i + batch_size])).permute(0, 3, 1, 2).float() / 255.0
            points, score = net(x)
            out[i:i + batch_size], scores[i:i + batch_size] = points.numpy(), score.numpy()
    return out, scores
