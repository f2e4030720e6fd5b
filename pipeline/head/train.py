"""Training the head on the resident cache: folds, the epoch loop, prediction, checkpoints.

The hot loop never touches a DataLoader: all features sit in one tensor on the training device
and a batch is a single gather with index tensors from `ClipSampler` (docs/reference.md §8: a 1 M-parameter
head is far faster than any per-sample loader). Recipe from Table 1 and the authors' `main.py`:
Adam (lr 1e-4, wd 1e-4), batch 8, 120 epochs, cosine annealing (T_max 160) damped by a 10-epoch
linear warm-up, cross-entropy on the video logits (eq. 10-11).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.config import TrainHeadConfig
from pipeline.errors import ConfigError, PipelineError
from pipeline.head.baselines import build_head
from pipeline.head.fusion import ProbeFusion, fuse, pooled_input, rich_clip_map, rich_clips
from pipeline.head.inputs import input_dim
from pipeline.head.report import war_uar
from pipeline.head.sanity import linear_probe
from pipeline.head.sampling import ClipSampler
from pipeline.io import atomic_path
from pipeline.precision import resolve_device, warn_if_emulated
from pipeline.head.stack import CEFLNetStack, FoldAdam, ModuleStack, rng_state, stack_heads
from pipeline.workers import release_idle_workers

log = logging.getLogger(__name__)


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked for (weights and the loss stay fp32), else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def set_threads(threads: int, device: torch.device) -> None:
    """CPU intra-op threads. Measured on 2 cores (bench/bench_head.py): the OpenMP pool pays off for
    the 512-wide head but spins badly when other processes hold the cores, so it is a parameter."""
    if device.type == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)


def seed_everything(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    # Deterministic kernels where they exist; on CUDA some (index backward) only warn.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")


def lr_at(epoch: int, cfg: TrainHeadConfig) -> float:
    """Per-epoch learning rate of the authors' main.py: CosineAnnealingLR(T_max).step(epoch), then
    pytorch_warmup.LinearWarmup's dampening factor min(1, (epoch + 1) / warmup)."""
    cosine = 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.t_max))
    warm = min(1.0, (epoch + 1) / cfg.warmup_epochs) if cfg.warmup_epochs > 0 else 1.0
    return cfg.lr * cosine * warm


# --------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray  # row indices into the cache
    test: np.ndarray


def make_folds(labels: np.ndarray, subjects: Sequence[str], *, folds: Sequence[int | None] | None = None,
               splits: Sequence[str | None] | None = None, k: int = 10, seed: int = 0) -> list[Fold]:
    """Subject-independent folds.

    Official folds win (test fold f = the videos marked f), then a fixed split (one fold: `train`
    rows train, every other split value tests), else StratifiedGroupKFold over subjects, seeded.
    `subjects` is the fold key: the subjects, or their groups where related people must stay together
    (`pipeline.head.data.fold_groups`).
    """
    n = len(labels)
    if folds is not None and n and all(f is not None for f in folds):
        f = np.asarray(folds)
        return [Fold(i, np.flatnonzero(f != v), np.flatnonzero(f == v)) for i, v in enumerate(sorted(set(f.tolist())))]
    if splits is not None and n and all(s for s in splits):
        s = np.asarray(splits)
        return [Fold(0, np.flatnonzero(s == "train"), np.flatnonzero(s != "train"))]
    from sklearn.model_selection import StratifiedGroupKFold

    n_subjects = len(set(subjects))
    if n_subjects < k:
        raise ConfigError([f"train_head.folds={k} but the cache has only {n_subjects} subjects; " + _fewer(n_subjects)])
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    if n and (counts < k).all():  # scikit-learn's ValueError, as a message (issue 16)
        raise ConfigError([f"train_head.folds={k} but no class has {k} videos (largest: {counts.max()}); "
                           + _fewer(int(counts.max()))])
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [Fold(i, tr, te) for i, (tr, te) in enumerate(sgkf.split(np.zeros(n), labels, groups=list(subjects)))]


def _fewer(most: int) -> str:
    """The fix for too many folds; cross-validation needs 2 at least."""
    if most >= 2:
        return f"use --folds {most} or fewer (2 at least)"
    return ("cross-validation needs at least 2 folds and so 2 subjects (and 2 videos of a class): add videos, "
            "or give the dataset official folds or a train/test split")


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class EpochRecord:
    """One row of a fold's history (history/fold-<k>.csv): what DVC plots across experiments."""

    epoch: int
    """1-based."""
    train_loss: float
    """Mean cross-entropy over the epoch's training batches (random clip offsets, dropout on)."""
    train_acc: float
    """Percent of training videos classified right in their batch, during the epoch."""
    test_loss: float
    """Cross-entropy of the test fold at the epoch's end (fixed test offsets)."""
    test_war: float
    test_uar: float


@dataclass
class FoldResult:
    fold: int
    test: np.ndarray  # (n_test,) cache rows
    probs: np.ndarray  # (n_test, C) last epoch
    rich_clip: np.ndarray  # (n_test,) emotion-rich clip index (test sampling)
    clip_scores: np.ndarray  # (n_test, C, n_clips)
    embedding: np.ndarray  # (n_test, E)
    history: list[EpochRecord] = field(default_factory=list)
    """Train and test-fold scores after every epoch."""
    state_dict: dict | None = None
    probe: tuple[float, float] | None = None
    """(WAR, UAR) of the linear probe on the same fitted input and fold (pipeline/head/sanity.py)."""
    held_out: list[EpochRecord] = field(default_factory=list)
    """`epoch_select: inner`: the held-out run's per-epoch scores (its test_* columns are the held-out
    training subjects); the fold then trained len(history) epochs."""

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def gather(features: Sequence[torch.Tensor], rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(F, B) cache rows and (F, B, n, K) frame indices -> (F, B, n, K, D) float32 head input; one gather when
    the folds share one cache (fold f reads features[f]: `train_head.features: finetuned` gives each its own)."""
    if all(f is features[0] for f in features):
        return features[0][rows[..., None, None], index].float()
    return torch.stack([f[r[:, None, None], i] for f, r, i in zip(features, rows, index)]).float()


@torch.no_grad()
def predict_folds(stack: CEFLNetStack | ModuleStack, features: Sequence[torch.Tensor], rows: Sequence[torch.Tensor],
                  sampler: ClipSampler, chunk: int = 512, windows: bool = True) -> list[dict[str, torch.Tensor]]:
    """Test-time forward of fold f's cache rows `rows[f]` through fold f's head; per fold: probs, rich_clip,
    clip_scores, embedding. All folds in one forward per chunk and window, shorter ones padded.

    probs: averaged over `sampler.window_offsets()` (with `windows`; else the `test_offset` window alone);
    clip_scores and embedding: the `test_offset` window's; rich_clip: its best clip for the averaged class."""
    was_training = stack.training
    stack.eval()
    dev = rows[0].device
    offsets = sampler.window_offsets() if windows else [sampler.test_offset]
    outs: list[dict[str, list]] = [{"probs": [], "rich_clip": [], "clip_scores": [], "embedding": []} for _ in rows]
    for s in range(0, max(len(r) for r in rows), chunk):
        part = [r[s:s + chunk] for r in rows]
        b = max(len(p) for p in part)
        padded = torch.stack([torch.cat([p, p.new_zeros(b - len(p))]) for p in part])  # (F, b)
        probs, first = 0.0, None
        for offset in offsets:
            index = sampler.test_indices(dev, offset)  # (n, K)
            o = stack(gather(features, padded, index.expand(len(rows), b, *index.shape)), [len(p) for p in part])
            probs = probs + torch.softmax(o.logits.float(), dim=-1)  # (F, b, C)
            first = o if first is None else first
        probs = probs / len(offsets)
        # eq. 6 for the averaged class: with one window, exactly the head's own rich clip
        rich = (torch.stack([rich_clips(first.clip_scores[f], probs[f]) for f in range(len(rows))])
                if len(offsets) > 1 else first.rich_clip)
        for f, p in enumerate(part):
            n = len(p)
            outs[f]["probs"].append(probs[f, :n])
            outs[f]["rich_clip"].append(rich[f, :n])
            outs[f]["clip_scores"].append(first.clip_scores[f, :n].float())
            outs[f]["embedding"].append(first.embedding[f, :n].float())
    stack.train(was_training)
    return [{k: torch.cat(v) for k, v in out.items()} for out in outs]


def predict(model: nn.Module, features: torch.Tensor, rows: torch.Tensor, sampler: ClipSampler,
            chunk: int = 512) -> dict[str, torch.Tensor]:
    """Test-time forward of cache rows through one head (`predict_folds`); probs, rich_clip, clip_scores, embedding,
    and rich_map: the map the rich clip was read from (`rich_clip_map`). A checkpoint trained with `fusion: probe`
    carries its probe (`model.fusion`): probs are then the fused ones, as train-head scored them."""
    out = predict_folds(ModuleStack([model]), [features], [rows], sampler, chunk)[0]
    out["rich_map"] = out["clip_scores"]
    fusion = getattr(model, "fusion", None)
    if fusion is not None:
        out["probs"] = fuse(out["probs"], fusion(pooled_input(model, features, rows)), fusion.share)
        out["rich_map"] = rich_clip_map(model, fusion, out["clip_scores"], features, rows, sampler)
        out["rich_clip"] = rich_clips(out["rich_map"], out["probs"])
    return out


# --------------------------------------------------------------------------- training


@dataclass
class FoldRun:
    """One fold's training inside a batched group, everything it would have if trained alone."""

    fold: Fold
    """`train`: the rows it trains on; `test`: the rows scored after every epoch."""
    model: nn.Module
    """Its head, built from its own seed, input transform fitted on `fold.train`."""
    rng: torch.Tensor
    """The global RNG state right after the head was built: where its dropout masks come from."""
    features: torch.Tensor
    """(N, T, D) the resident cache it reads."""
    seed: int
    """Its data order and clip offsets (a generator of its own)."""
    epochs: int
    patience: int = 0
    """> 0: stop once the scored rows' smoothed WAR has not risen for this many epochs (held-out runs only)."""


def fold_run(cfg: TrainHeadConfig, features: torch.Tensor, labels: np.ndarray, subjects: np.ndarray, fold: Fold,
             n_classes: int, kind: str, *, seed: int, epochs: int, patience: int = 0) -> FoldRun:
    """Fold `fold`'s head from the fold's own seed; the fitted part of its input sees the training rows only
    (no test-fold statistics)."""
    torch.manual_seed(cfg.seed + fold.index)
    model = build_head(cfg, features.shape[-1], n_classes, kind).to(features.device)
    rows = torch.as_tensor(fold.train, device=features.device)
    model.input.fit(features[rows], subjects[fold.train], labels[fold.train])
    return FoldRun(fold, model, rng_state(features.device), features, seed, epochs, patience)


def epoch_plan(train_rows: torch.Tensor, sampler: ClipSampler, batch: int,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A fold's epoch drawn from its generator in the order training alone draws it: the shuffled rows
    (n,), then each batch's frame indices, concatenated (n, n_clips, K)."""
    order = train_rows[torch.randperm(len(train_rows), generator=gen, device=gen.device)]
    index = [sampler.train_indices(len(order[s:s + batch]), gen) for s in range(0, len(order), batch)]
    empty = torch.zeros((0, sampler.n_clips, sampler.frames_per_clip), dtype=torch.long, device=gen.device)
    return order, torch.cat(index) if index else empty


def train_group(runs: Sequence[FoldRun], labels: torch.Tensor, sampler: ClipSampler, cfg: TrainHeadConfig,
                progress: tqdm | QueueProgress | None = None) -> list[FoldResult]:
    """Train the runs' folds together as one batched model (pipeline/head/stack.py), each from scratch for its
    `epochs`, its scored rows evaluated after every epoch; fold f's numbers are those of training it alone.

    Each step takes one batch of every fold still in its epoch. Folds differ in size: a fold whose epoch has
    fewer batches sits the last steps out (its rows are padding with zero loss weight, no dropout draw, and
    no Adam step), and a short last batch is padded the same way."""
    dev, fn, b = labels.device, len(runs), cfg.batch_size
    stack = stack_heads([r.model for r in runs], [r.rng for r in runs])
    opt = FoldAdam(stack, cfg.lr, cfg.weight_decay)
    gens = [torch.Generator(device=dev).manual_seed(r.seed) for r in runs]
    feats = [r.features for r in runs]
    train_rows = [torch.as_tensor(r.fold.train, device=dev) for r in runs]
    test_rows = [torch.as_tensor(r.fold.test, device=dev) for r in runs]
    test_true = [labels[t].cpu().numpy() for t in test_rows]
    history: list[list[EpochRecord]] = [[] for _ in runs]
    last: list[dict] = [{} for _ in runs]
    live, epoch = list(range(fn)), 0
    while live := [f for f in live if epoch < runs[f].epochs]:
        stack.train()
        opt.lr = lr_at(epoch, cfg)
        plans = {f: epoch_plan(train_rows[f], sampler, b, gens[f]) for f in live}
        n = [len(plans[f][0]) if f in plans else 0 for f in range(fn)]
        width = -(-max(n) // b) * b
        rows = torch.zeros((fn, width), dtype=torch.long, device=dev)  # padding: row 0, weight 0
        index = torch.zeros((fn, width, sampler.n_clips, sampler.frames_per_clip), dtype=torch.long, device=dev)
        for f, (order, idx) in plans.items():
            rows[f, :n[f]], index[f, :n[f]] = order, idx
        weight = (torch.arange(width, device=dev) < torch.tensor(n, device=dev)[:, None]).float()  # (F, width)
        # Summed on the device and read once per epoch: a .item() per batch would sync every step.
        loss_sum = torch.zeros(fn, device=dev)
        hits = torch.zeros(fn, device=dev)
        for s in range(0, width, b):
            counts = [min(max(c - s, 0), b) for c in n]  # real rows of each fold in this step
            r, w = rows[:, s:s + b], weight[:, s:s + b]  # (F, B)
            with autocast(dev, cfg.precision):
                logits = stack(gather(feats, r, index[:, s:s + b]), counts).logits  # (F, B, C)
            y = labels[r]
            ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(w) * w
            per_fold = torch.tensor([max(c, 1) for c in counts], device=dev, dtype=ce.dtype)
            stack.zero_grad()
            (ce.sum(dim=1) / per_fold).sum().backward()  # each fold's mean loss (eq. 10-11); folds share no weight
            opt.step([f for f, c in enumerate(counts) if c])
            loss_sum += ce.detach().sum(dim=1)
            hits += ((logits.detach().argmax(-1) == y) * w).sum(dim=1)
        # The scored rows' outputs reuse the one forward pass the WAR needs (no extra evaluation); every epoch
        # scores the test_offset window alone, the averaged windows cost one pass at the end.
        with autocast(dev, cfg.precision):
            out = predict_folds(stack, feats, test_rows, sampler, windows=False)
        loss_sum, hits = loss_sum.tolist(), hits.tolist()
        for f in live:
            probs, truth = out[f]["probs"], labels[test_rows[f]]
            test_loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), truth)) if len(truth) else 0.0
            war, uar = war_uar(test_true[f], probs.argmax(1).cpu().numpy())
            seen = max(n[f], 1)
            history[f].append(EpochRecord(epoch + 1, loss_sum[f] / seen, 100.0 * hits[f] / seen, test_loss, war, uar))
            last[f] = out[f]
            if not math.isfinite(loss_sum[f]):
                raise diverged(runs[f].fold.index, epoch + 1, loss_sum[f], cfg)
        if progress is not None:
            progress.update(len(live))
            f = live[0]
            progress.set_postfix(fold=runs[f].fold.index, loss=f"{history[f][-1].train_loss:.3f}",
                                 war=f"{history[f][-1].test_war:.1f}")
        live = [f for f in live if not (runs[f].patience
                                        and epoch + 1 - best_held_out_epoch(history[f]) >= runs[f].patience)]
        epoch += 1
    if len(sampler.window_offsets()) > 1:  # each fold's weights are its last epoch's: a finished fold took no step since
        with autocast(dev, cfg.precision):
            last = predict_folds(stack, feats, test_rows, sampler)
    return [FoldResult(r.fold.index, r.fold.test, *(last[f][k].cpu().numpy() for k in
                                                     ("probs", "rich_clip", "clip_scores", "embedding")),
                       history[f], stack.state_dict(f)) for f, r in enumerate(runs)]


def diverged(fold: int, epoch: int, loss: float, cfg: TrainHeadConfig) -> PipelineError:
    """A fold whose training loss is no longer a number: measured with lr 1e-3 on flow features, a fold at 97-100 %
    training accuracy turned NaN at epoch 52 and then answered one class to the end, silently reported as
    chance (bench/results/robust.md, fifth session). Stopping names the cause instead."""
    return PipelineError(f"train-head: fold {fold}'s training loss became {loss} at epoch {epoch} "
                         f"(train_head.lr={cfg.lr:g}, train_head.precision={cfg.precision}): its weights are no "
                         "longer numbers, so no number of this run would mean anything, and nothing was written. "
                         "Lower train_head.lr (the paper's is 1e-4), or look for non-finite values in the features.")


SMOOTH_EPOCHS = 5
"""Held-out WAR is averaged over this many epochs before the best is picked: a few dozen held-out videos
make single epochs jumpy."""


def best_held_out_epoch(history: Sequence[EpochRecord], first: int = 1) -> int:
    """1-based epoch (from `first` on) where the held-out WAR, averaged over the last SMOOTH_EPOCHS epochs, is
    highest; ties go to the lower held-out loss, then to the earlier epoch.

    Accuracy, not loss: on small data the held-out loss often rises early (a confident head is punished
    hard for its few mistakes) while the accuracy still climbs, and a loss minimum then stops far too soon."""
    if not history:
        raise ValueError("no held-out epochs")
    war = np.array([e.test_war for e in history])
    smooth = np.array([war[max(0, i - SMOOTH_EPOCHS + 1):i + 1].mean() for i in range(len(war))])
    candidates = [i for i, e in enumerate(history) if e.epoch >= first] or list(range(len(history)))
    best = min(candidates, key=lambda i: (-round(float(smooth[i]), 6), history[i].test_loss, i))
    return history[best].epoch


def inner_split(labels: np.ndarray, fold_keys: np.ndarray, train: np.ndarray, k: int, seed: int) -> Fold | None:
    """A subject-independent held-out part of a training fold (1 / k of its subjects, or of their groups:
    `fold_keys`, class-stratified), or None when the fold has fewer than 2 of them or classes to split by."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = fold_keys[train]
    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        return None
    sgkf = StratifiedGroupKFold(n_splits=min(k, n_groups), shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": expected here
        warnings.simplefilter("ignore", UserWarning)
        tr, va = next(sgkf.split(np.zeros(len(train)), labels[train], groups=groups))
    return Fold(-1, train[tr], train[va]) if len(tr) and len(va) else None


def train_folds(cfg: TrainHeadConfig, folds: Sequence[Fold], features: Sequence[torch.Tensor], labels: np.ndarray,
                subjects: np.ndarray, n_classes: int, kind: str, progress: tqdm | QueueProgress | None = None,
                probe: bool = False, groups: np.ndarray | None = None) -> list[FoldResult]:
    """One group of folds (fold i reads features[i]) trained together; with `epoch_select: inner`, first the
    held-out runs of all of them (together too), then each fold for the epoch count its held-out run chose.

    The held-out run of a fold trains on part of its training subjects, with the fold's own seeds, while the
    rest of its training subjects are scored each epoch; the count is the epoch of their best smoothed WAR
    (`best_held_out_epoch`), at least the warm-up. The test fold never enters the choice."""
    labs = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(features[0].device)
    sampler = ClipSampler.from_config(cfg, features[0].shape[1])
    epochs = {fold.index: cfg.epochs for fold in folds}
    held: dict[int, list[EpochRecord]] = {}
    if cfg.epoch_select == "inner":
        runs = []
        for fold, feats in zip(folds, features):
            inner = inner_split(labels, subjects if groups is None else groups, fold.train, cfg.inner_folds,
                                cfg.seed + fold.index)
            if inner is None:
                log.warning("fold %d: fewer than 2 training subjects, epoch_select=inner falls back to %d epochs",
                            fold.index, cfg.epochs)
                if progress is not None:
                    progress.update(cfg.epochs)
                continue
            runs.append(fold_run(cfg, feats, labels, subjects, Fold(fold.index, inner.train, inner.test), n_classes,
                                 kind, seed=cfg.seed + 2000 + fold.index, epochs=cfg.epochs,
                                 patience=cfg.inner_patience))
        for run, res in zip(runs, train_group(runs, labs, sampler, cfg, progress) if runs else []):
            held[run.fold.index] = res.history
            epochs[run.fold.index] = best_held_out_epoch(res.history, first=min(cfg.warmup_epochs, cfg.epochs))
            if progress is not None:  # the bar counted the held-out run's full length, and the fold's
                progress.update(cfg.epochs - len(res.history))
                progress.total -= cfg.epochs - epochs[run.fold.index]
                progress.refresh()
    runs = [fold_run(cfg, feats, labels, subjects, fold, n_classes, kind, seed=cfg.seed + 1000 + fold.index,
                     epochs=epochs[fold.index]) for fold, feats in zip(folds, features)]
    results = train_group(runs, labs, sampler, cfg, progress)
    for run, res in zip(runs, results):
        res.held_out = held.get(run.fold.index, [])
        if not (probe or cfg.fusion == "probe"):
            continue
        pooled = pooled_input(run.model, run.features).cpu()  # (N, D): the input the probe reads
        if cfg.fusion == "probe":
            fusion = ProbeFusion.fit(pooled[run.fold.train].numpy(), labels[run.fold.train], n_classes, cfg.seed,
                                     share=cfg.fusion_weight, locates=cfg.rich_clip == "probe")
            res.probs = fuse(torch.from_numpy(res.probs), fusion(pooled[run.fold.test]), fusion.share).numpy()
            maps = rich_clip_map(run.model, fusion, torch.from_numpy(res.clip_scores),
                                 run.features, torch.as_tensor(run.fold.test), sampler)
            res.rich_clip = rich_clips(maps, torch.from_numpy(res.probs)).numpy()
            res.state_dict = {**res.state_dict, **{f"fusion.{k}": v for k, v in fusion.state_dict().items()}}
        if probe:
            res.probe = linear_probe(pooled[:, None].numpy(), labels, run.fold.train, run.fold.test, cfg.seed)[:2]
    return results


def _train_share(cfg: TrainHeadConfig, features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold],
                 n_classes: int, kind: str, device: torch.device, threads: int, subjects: np.ndarray, probe: bool,
                 fold_features: dict[int, np.ndarray] | None, progress: tqdm | QueueProgress | None = None,
                 groups: np.ndarray | None = None) -> list[FoldResult]:
    """One process's share of the folds, `fold_batch` at a time as one batched model."""
    set_threads(threads, device)
    seed_everything(cfg.seed, device)
    resident: dict[int, torch.Tensor] = {}

    def feats_of(fold: Fold) -> torch.Tensor:
        """float16 resident (half the memory: DFEW is 1.2 GiB), moved once; each gathered batch is cast to fp32."""
        src = features if fold_features is None else fold_features[fold.index]
        if id(src) not in resident:
            a = np.ascontiguousarray(src)  # joblib hands a worker a read-only memory map; torch wants it writable
            resident[id(src)] = torch.from_numpy(a if a.flags.writeable else a.copy()).to(device)
        return resident[id(src)]

    size = cfg.fold_batch or len(folds)
    results: list[FoldResult] = []
    for s in range(0, len(folds), size):
        group = folds[s:s + size]
        results += train_folds(cfg, group, [feats_of(f) for f in group], labels, subjects, n_classes, kind,
                               progress, probe, groups)
    return results


def fold_processes(cfg: TrainHeadConfig, device: torch.device, n_folds: int) -> int:
    """How many processes share the folds: `fold_workers`, else one per core (capped by the folds) on the CPU
    and one on a GPU."""
    return cfg.fold_workers or (min(os.cpu_count() or 1, n_folds) if device.type == "cpu" else 1)


def cross_validate(cfg: TrainHeadConfig, features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold],
                   n_classes: int, *, kind: str = "ceflnet", device: torch.device | None = None,
                   desc: str = "train_head", subjects: Sequence[str] | None = None,
                   probe: bool = False, fold_features: dict[int, np.ndarray] | None = None,
                   groups: Sequence[str] | None = None) -> list[FoldResult]:
    """Every fold trained from its own seed schedule; fold k on `fold_features[k]` when given (rows
    aligned with `features`: `train_head.features: finetuned`, pipeline/head/finetuned.py), else on `features`.

    The folds train as one batched model (`fold_batch` at most at a time): one step of k folds pays the
    per-step overhead once instead of k times. On the CPU the folds are shared among `fold_workers`
    single-threaded processes (default one per core): measured on a busy 2-core machine, one process on two
    threads ran the same steps 3x slower than one thread, its OpenMP pool spinning against other processes
    (bench/results/head_cpu.md). Every fold's numbers are those of training it alone, whichever the grouping
    (tests/head/test_fold_stack.py, tests/head/test_parallel.py).

    `subjects`: each row's person (identity handling fits on them); `groups`: the fold key that `epoch_select:
    inner` splits a training fold by (`TrainingData.groups`), the subjects unless given.
    """
    device = device or resolve_device(cfg.device, "train_head.device")
    warn_if_emulated(device, cfg.precision, "train_head.precision", log)
    labels = np.asarray(labels)
    subjects = np.asarray(subjects) if subjects is not None else np.arange(len(labels)).astype(str)
    groups = np.asarray(groups) if groups is not None else subjects  # the fold key epoch_select: inner splits by
    workers = fold_processes(cfg, device, len(folds))
    passes = 2 if cfg.epoch_select == "inner" else 1  # the held-out run, then the fold (shortened as chosen)
    bar = tqdm(total=len(folds) * cfg.epochs * passes, unit="epoch", leave=False,
               desc=f"{desc} ({workers} processes, folds batched)" if workers > 1 else desc)
    if workers > 1 and device.type == "cpu" and len(folds) > 1:
        from joblib import Parallel, delayed

        from pipeline.workers import manager as progress_manager

        release_idle_workers()  # a pool left by detect/manifest would recycle these workers mid-run
        shares = [folds[i * len(folds) // workers:(i + 1) * len(folds) // workers] for i in range(workers)]
        with bar, progress_manager() as manager:
            queue = manager.Queue()
            pump = threading.Thread(target=_pump, args=(queue, bar), daemon=True)
            pump.start()
            jobs = (delayed(_train_share)(cfg, features, labels, share, n_classes, kind, device, cfg.threads or 1,
                                          subjects, probe, None if fold_features is None else
                                          {f.index: fold_features[f.index] for f in share}, QueueProgress(queue),
                                          groups)
                    for share in shares)
            try:
                results = [r for part in Parallel(n_jobs=workers)(jobs) for r in part]
            finally:
                queue.put(None)
                pump.join()
        return sorted(results, key=lambda r: r.fold)
    with bar:
        return _train_share(cfg, features, labels, folds, n_classes, kind, device, cfg.threads, subjects, probe,
                            fold_features, bar, groups)


class QueueProgress:
    """The part of tqdm a fold process uses (update, total, refresh, set_postfix), sent to the parent's bar:
    the user sees epochs go by, not two shares that finish at the end."""

    def __init__(self, queue):
        self.queue, self._total = queue, 0

    def update(self, n: int = 1) -> None:
        self.queue.put(("update", n))

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:  # train_folds shortens the bar by what epoch selection skips
        self.queue.put(("total", value - self._total))
        self._total = value

    def refresh(self) -> None:
        pass

    def set_postfix(self, **_: object) -> None:
        pass


def _pump(queue, bar: tqdm) -> None:
    """Parent side of QueueProgress: apply the fold processes' messages to the bar until None."""
    while (message := queue.get()) is not None:
        kind, n = message
        if kind == "update":
            bar.update(n)
        else:
            bar.total += n
            bar.refresh()


# --------------------------------------------------------------------------- checkpoints


def head_params(state_dict: dict) -> int:
    """Trained parameters of a head (the input transform's fitted statistics and the fused probe are not the head's)."""
    return int(sum(v.numel() for k, v in state_dict.items() if not k.startswith(("input.", "fusion."))))


@dataclass
class LoadedHead:
    model: nn.Module
    class_names: list[str]
    in_dim: int
    config: TrainHeadConfig
    kind: str
    fold: int
    test_video_ids: list[str]
    provenance: dict


def save_head(path: Path, state_dict: dict, cfg: TrainHeadConfig, *, kind: str, in_dim: int,
              class_names: Sequence[str], fold: int, test_video_ids: Sequence[str], provenance: dict) -> None:
    payload = {"state_dict": state_dict, "train_head": dataclasses.asdict(cfg), "kind": kind, "in_dim": in_dim,
               "class_names": list(class_names), "fold": fold, "test_video_ids": list(test_video_ids),
               "provenance": {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in provenance.items()}}
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def checkpoint_module(cfg: TrainHeadConfig, width: int, n_classes: int, kind: str = "ceflnet") -> nn.Module:
    """The module a fold's state dict loads into: the head behind its input transform and, with `fusion: probe`,
    the fitted probe's buffers (`fusion.*`, which `predict` then applies)."""
    model = build_head(cfg, width, n_classes, kind)
    if cfg.fusion == "probe":
        model.fusion = ProbeFusion(width, n_classes, share=cfg.fusion_weight, locates=cfg.rich_clip == "probe")
    return model


def load_head(path: Path, device: str | torch.device = "cpu") -> LoadedHead:
    """Rebuild a fold checkpoint (`fold-k.pt`) in eval mode, ready for prediction."""
    ck = torch.load(Path(path), map_location=device, weights_only=True)
    raw = dict(ck["train_head"])
    raw["test_frame_offsets"] = tuple(raw["test_frame_offsets"])
    known = {f.name for f in dataclasses.fields(TrainHeadConfig)}
    raw.setdefault("clip_kernel", 3)  # checkpoints from before the parameter were trained with kernel 3
    raw.setdefault("test_windows", "fixed")  # and scored on the one test window
    raw.setdefault("fusion", "none")  # and by the head alone
    raw.setdefault("fusion_weight", 0.5)  # or, fused, by the plain mean
    raw.setdefault("rich_clip", "head")  # and their emotion-rich clip read from the head's map
    cfg = TrainHeadConfig(**{k: v for k, v in raw.items() if k in known})
    # in_dim is the backbone's feature width; the head's input may be wider (two_stream)
    model = checkpoint_module(cfg, input_dim(cfg.center, ck["in_dim"]), len(ck["class_names"]), ck["kind"]).to(device)
    state = ck["state_dict"]
    if not any(k.startswith("input.") for k in state):  # a checkpoint from before the input transform
        state = {**{f"head.{k}": v for k, v in state.items()}, **{f"input.{k}": v for k, v in model.input.state_dict().items()}}
    model.load_state_dict(state)
    model.eval()
    return LoadedHead(model, list(ck["class_names"]), int(ck["in_dim"]), cfg, ck["kind"], int(ck["fold"]),
                      list(ck["test_video_ids"]), dict(ck["provenance"]))
