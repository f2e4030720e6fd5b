"""One fold's backbone adaptation: the epoch loop, its resumable state, the checkpoint and the leakage guard.

`train_fold` is handed the training videos' crops only, so a test video cannot reach a batch by any
indexing mistake; the checkpoint records the sorted ids it trained on, and `check_no_leakage` compares
them with the fold's test ids before any per-fold cache is written (issue 12, item 4).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.nn import functional as F

from pipeline.config import FinetuneConfig
from pipeline.errors import UNREADABLE_CHECKPOINT, PipelineError
from pipeline.features import FeatureExtractor
from pipeline.finetune.crops import CropSource, as_source
from pipeline.head.finetuned import ids_sha256
from pipeline.finetune.model import (ClipModel, FrameClassifier, adapted_parameters, augment, blocks_of,
                                     l2sp_penalty, lr_factor, network_input)
from pipeline.head.sampling import ClipSampler
from pipeline.io import atomic_path

FORMAT = 1
SPEED_KEYS = ("device", "threads", "crops_memory_gb")
"""finetune keys that change speed, not the adapted weights."""


class LeakageError(PipelineError):
    """A fold's backbone trained on one of that fold's test videos: its features would leak the test set."""


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Of the tensors' names, dtypes, shapes and bytes, in name order: equal hashes, equal weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes(order="C"))  # logical order: channels_last strides hash alike
    return h.hexdigest()


def run_params(ft: FinetuneConfig, ext: FeatureExtractor, n_classes: int) -> dict:
    """Everything that shapes the adapted weights besides the training videos."""
    return {"finetune": {k: v for k, v in dataclasses.asdict(ft).items() if k not in SPEED_KEYS},
            "backbone": ext.backbone, "weights": ext.weights, "weights_sha256": ext.weights_sha256,
            "preprocess": ext.preprocess(), "input_convention": ext.input_convention, "n_classes": n_classes}


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_no_leakage(trained_ids: Sequence[str], test_ids: Sequence[str], fold: int) -> None:
    overlap = sorted(set(trained_ids) & set(test_ids))
    if overlap:
        raise LeakageError(f"fold {fold}: the backbone checkpoint trained on {len(overlap)} of the fold's own test "
                           f"videos ({', '.join(overlap[:3])}{' ...' if len(overlap) > 3 else ''}); refusing to "
                           "write its per-fold cache. Rerun `pipeline run finetune` with --force (the folds changed "
                           "since the checkpoint was written, or the checkpoint was edited)")


@dataclasses.dataclass
class FoldRun:
    fold: int
    trained_ids: list[str]
    """Sorted; the rows of `crops` in this order."""
    params: dict
    params_hash: str
    resume: Path


def _resume_state(path: Path, run: FoldRun) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_CHECKPOINT:
        return None  # a state from a run killed while saving, or another version: start the fold over
    same = state.get("params_hash") == run.params_hash and state.get("trained_ids_sha256") == ids_sha256(run.trained_ids)
    return state if same else None


def train_fold(ext: FeatureExtractor, crops: torch.Tensor | CropSource, labels: torch.Tensor,
               ft: FinetuneConfig, n_classes: int, run: FoldRun, *,
               on_epoch: Callable[[int, float], None] | None = None) -> tuple[FrameClassifier, list[float]]:
    """Adapt `ext.module` in place on one fold's training crops; returns the classifier and per-epoch loss.

    Args:
        ext: the backbone at its starting weights.
        crops: the training videos only, in `run.trained_ids` order: a (N, T, 3, S, S) uint8 tensor or a
            `CropSource` (resident or streamed from the pack: the same batches either way).
        labels: (N,) int64 video labels.
        on_epoch: called with (1-based epoch, mean loss) after each epoch is saved.
    """
    crops = as_source(crops)
    assert len(crops) == len(labels) == len(run.trained_ids), (len(crops), len(labels), len(run.trained_ids))
    dev = ext.device
    torch.manual_seed(ft.seed + run.fold)
    end_to_end = ft.mode == "end_to_end"
    model = (ClipModel if end_to_end else FrameClassifier)(ext.module, ext.dim, n_classes).to(dev)
    sampler = clip_sampler(crops.shape[1]) if end_to_end else None
    adapted = adapted_parameters(blocks_of(ext.backbone, ext.module), ft.train_layers)
    start = [p.detach().clone() for p in adapted]  # L2-SP's anchor: the starting weights, also on resume
    for p in ext.module.parameters():
        p.requires_grad_(False)
    groups = [{"params": list(model.fc.parameters()), "lr": ft.lr, "weight_decay": ft.weight_decay, "base": ft.lr}]
    if adapted:
        groups.append({"params": adapted, "lr": ft.body_lr, "weight_decay": 0.0, "base": ft.body_lr})
    opt = torch.optim.AdamW(groups)
    gen = torch.Generator().manual_seed(ft.seed + 1000 + run.fold)
    history: list[float] = []
    first = 0
    state = _resume_state(run.resume, run)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history, first = list(state["history"]), int(state["epoch"])
    n, t = crops.shape[:2]
    labels = labels.to(dev)
    model.train()
    for epoch in range(first, ft.epochs):
        body_on = bool(adapted) and epoch >= ft.head_epochs
        for p in adapted:
            p.requires_grad_(body_on)
        for g in opt.param_groups:
            g["lr"] = g["base"] * lr_factor(epoch, ft.epochs)
        if end_to_end:  # every training video once, `videos_per_batch` at a time, 7 x 5 sampled crops each
            videos = torch.randperm(n, generator=gen)
            step = max(1, ft.batch_size // (sampler.n_clips * sampler.frames_per_clip))
        else:  # `frames_per_video` frames of every training video, shuffled together: (n * fpv,) draws
            videos = torch.arange(n).repeat(ft.frames_per_video)[torch.randperm(n * ft.frames_per_video, generator=gen)]
            frames = torch.randint(t, (len(videos),), generator=gen)
            step = ft.batch_size
        loss_sum = 0.0
        for s in range(0, len(videos), step):
            v = videos[s:s + step]
            if end_to_end:
                index = sampler.train_indices(len(v), gen)  # (b, n, K) into the resampled frames
                clips = crops.gather(v[:, None, None].expand_as(index), index, dev)  # (b, n, K, 3, S, S) uint8
                x = augment(clips.flatten(0, 2), gen, scale_min=ft.scale_min, flip=ft.flip, jitter=ft.jitter)
                x = network_input(ext, x).view(*clips.shape[:3], *x.shape[1:])
            else:
                x = augment(crops.gather(v, frames[s:s + step], dev), gen, scale_min=ft.scale_min, flip=ft.flip,
                            jitter=ft.jitter)
                x = network_input(ext, x)
            with torch.autocast(dev.type, dtype=ext.autocast_dtype, enabled=ext.autocast_dtype is not None):
                logits = model(x)  # (B, C)
            loss = F.cross_entropy(logits.float(), labels[v.to(dev)])
            total = loss + ft.l2sp * l2sp_penalty(adapted, start) if body_on and ft.l2sp else loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(v)
        history.append(loss_sum / len(videos))
        with atomic_path(run.resume) as tmp:  # a killed run restarts after the last completed epoch
            torch.save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "generator": gen.get_state(), "history": history, "params_hash": run.params_hash,
                        "trained_ids_sha256": ids_sha256(run.trained_ids)}, tmp)
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    model.eval()
    return model, history


def clip_sampler(n_frames: int) -> ClipSampler:
    """`end_to_end`: the paper's sampler (TrainHeadConfig defaults) over a video's resampled crops."""
    from pipeline.config import TrainHeadConfig

    try:
        return ClipSampler.from_config(TrainHeadConfig(), n_frames)
    except ValueError as err:
        raise PipelineError(f"finetune.mode=end_to_end draws the paper's 7 clips x 5 frames from a 75-frame window: "
                            f"{err}; re-extract with resample.n_frames >= 105 or use finetune.mode=frame") from err


def save_checkpoint(path: Path, model: FrameClassifier, ext: FeatureExtractor, run: FoldRun, ft: FinetuneConfig,
                    history: list[float]) -> None:
    """`backbone-fold-k.pt`: the adapted backbone and its provenance, written atomically."""
    state = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
    payload = {"format": FORMAT, "fold": run.fold, "backbone": ext.backbone, "weights": ext.weights,
               "weights_sha256": ext.weights_sha256, "mode": ft.mode, "params": run.params,
               "params_hash": run.params_hash, "trained_ids": list(run.trained_ids),
               "trained_ids_sha256": ids_sha256(run.trained_ids), "epochs": len(history), "history": history,
               "state_dict": state, "state_sha256": state_sha256(state),
               "classifier": {k: v.detach().cpu() for k, v in model.fc.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def verify_checkpoint(path: Path, run: FoldRun, epochs: int) -> dict | None:
    """The checkpoint when it loads, its weights hash to the recorded value, and it was made with these
    parameters on these videos for all epochs; else None (the fold is trained again)."""
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        ok = (ck["format"] == FORMAT and ck["params_hash"] == run.params_hash and ck["epochs"] == epochs
              and ck["trained_ids"] == list(run.trained_ids)
              and ck["trained_ids_sha256"] == ids_sha256(run.trained_ids)
              and state_sha256(ck["state_dict"]) == ck["state_sha256"])
    except UNREADABLE_CHECKPOINT:
        return None
    return ck if ok else None
