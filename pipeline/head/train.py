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
from pipeline.head.inputs import input_dim
from pipeline.head.report import war_uar
from pipeline.head.sanity import linear_probe
from pipeline.head.sampling import ClipSampler
from pipeline.io import atomic_path
from pipeline.precision import warn_if_emulated
from pipeline.workers import release_idle_workers

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu. An explicit `cuda` without one is an error, never a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train_head.device is cuda but no CUDA device is visible (set it to auto or cpu)")
    return torch.device(name)


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


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor, rows: torch.Tensor, sampler: ClipSampler,
            chunk: int = 512) -> dict[str, torch.Tensor]:
    """Test-time forward of cache rows (fixed offsets); returns probs, rich_clip, clip_scores, embedding."""
    was_training = model.training
    model.eval()
    index = sampler.test_indices(features.device)  # (n, K)
    outs: dict[str, list] = {"probs": [], "rich_clip": [], "clip_scores": [], "embedding": []}
    for s in range(0, len(rows), chunk):
        r = rows[s:s + chunk]
        o = model(features[r[:, None, None], index].float())  # (b, n, K, D) -> HeadOutput
        outs["probs"].append(torch.softmax(o.logits.float(), dim=1))
        outs["rich_clip"].append(o.rich_clip)
        outs["clip_scores"].append(o.clip_scores.float())
        outs["embedding"].append(o.embedding.float())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}


# --------------------------------------------------------------------------- training


def train_fold(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, fold: Fold,
               sampler: ClipSampler, cfg: TrainHeadConfig, *, seed: int, progress: tqdm | None = None,
               patience: int = 0) -> FoldResult:
    """Train one fold from scratch for cfg.epochs; score the test fold after every epoch.

    `patience` > 0 stops once the scored rows' smoothed WAR has not risen for that many epochs: only for the
    held-out part of a training fold (`epoch_select: inner`), never for a test fold."""
    dev = features.device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    train_rows = torch.as_tensor(fold.train, device=dev)
    test_rows = torch.as_tensor(fold.test, device=dev)
    test_true = labels[test_rows].cpu().numpy()
    # fused Adam runs the whole update as one kernel (CPU and CUDA): the step is a large share of a
    # tiny head's time at batch 8.
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    history = []
    model.train()
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        order = train_rows[torch.randperm(len(train_rows), generator=gen, device=dev)]
        # Summed on the device and read once per epoch: a .item() per batch would sync every step.
        loss_sum = torch.zeros((), device=dev)
        hits = torch.zeros((), device=dev, dtype=torch.long)
        for s in range(0, len(order), cfg.batch_size):
            rows = order[s:s + cfg.batch_size]  # (B,)
            index = sampler.train_indices(len(rows), gen)  # (B, n, K)
            x = features[rows[:, None, None], index].float()  # (B, n, K, D)
            with autocast(dev, cfg.precision):
                logits = model(x).logits  # (B, C)
            loss = F.cross_entropy(logits.float(), labels[rows])  # eq. 10-11
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(rows)
            hits += (logits.detach().argmax(1) == labels[rows]).sum()
        # The test fold's scores reuse the one forward pass the WAR needs (no extra evaluation).
        with autocast(dev, cfg.precision):
            out = predict(model, features, test_rows, sampler)
        probs = out["probs"]
        test_loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels[test_rows])) if len(test_rows) else 0.0
        war, uar = war_uar(test_true, probs.argmax(1).cpu().numpy())
        n = max(len(order), 1)
        history.append(EpochRecord(epoch + 1, float(loss_sum) / n, 100.0 * float(hits) / n,
                                   test_loss, war, uar))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(fold=fold.index, loss=f"{history[-1].train_loss:.3f}", war=f"{war:.1f}")
        if patience and epoch + 1 - best_held_out_epoch(history) >= patience:
            break
    with autocast(dev, cfg.precision):
        out = {k: v.cpu().numpy() for k, v in predict(model, features, test_rows, sampler).items()}
    return FoldResult(fold.index, fold.test, out["probs"], out["rich_clip"], out["clip_scores"], out["embedding"],
                      history, {k: v.detach().cpu() for k, v in model.state_dict().items()})


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


def inner_split(labels: np.ndarray, subjects: np.ndarray, train: np.ndarray, k: int, seed: int) -> Fold | None:
    """A subject-independent held-out part of a training fold (1 / k of its subjects, class-stratified), or
    None when the fold has fewer than 2 subjects or classes to split by."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = subjects[train]
    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        return None
    sgkf = StratifiedGroupKFold(n_splits=min(k, n_groups), shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": expected here
        warnings.simplefilter("ignore", UserWarning)
        tr, va = next(sgkf.split(np.zeros(len(train)), labels[train], groups=groups))
    return Fold(-1, train[tr], train[va]) if len(tr) and len(va) else None


def select_epochs(cfg: TrainHeadConfig, feats: torch.Tensor, labs: torch.Tensor, labels: np.ndarray,
                  subjects: np.ndarray, fold: Fold, n_classes: int, kind: str,
                  progress: tqdm | None = None) -> tuple[int, list[EpochRecord]]:
    """`epoch_select: inner`: the epoch count for `fold`, read off a held-out part of its training videos.

    The head (and its fitted input) trains on the rest of the training fold with the fold's own seeds
    while the held-out subjects are scored each epoch; the count is the epoch of their best smoothed WAR
    (`best_held_out_epoch`), at least the warm-up. Only training-fold videos are touched: the test fold never enters the choice."""
    inner = inner_split(labels, subjects, fold.train, cfg.inner_folds, cfg.seed + fold.index)
    if inner is None:
        log.warning("fold %d: fewer than 2 training subjects, epoch_select=inner falls back to %d epochs",
                    fold.index, cfg.epochs)
        return cfg.epochs, []
    device = feats.device
    torch.manual_seed(cfg.seed + fold.index)
    model = build_head(cfg, feats.shape[-1], n_classes, kind).to(device)
    model.input.fit(feats[torch.as_tensor(inner.train, device=device)], subjects[inner.train], labels[inner.train])
    sampler = ClipSampler.from_config(cfg, feats.shape[1])
    held = train_fold(model, feats, labs, Fold(fold.index, inner.train, inner.test), sampler, cfg,
                      seed=cfg.seed + 2000 + fold.index, progress=progress, patience=cfg.inner_patience)
    if progress is not None and len(held.history) < cfg.epochs:  # the bar counted the held-out run's full length
        progress.update(cfg.epochs - len(held.history))
    return best_held_out_epoch(held.history, first=min(cfg.warmup_epochs, cfg.epochs)), held.history


def _train_one(cfg: TrainHeadConfig, features: np.ndarray, labels: np.ndarray, fold: Fold, n_classes: int,
               kind: str, device: torch.device, threads: int, progress: tqdm | None = None,
               subjects: np.ndarray | None = None, probe: bool = False) -> FoldResult:
    """One fold from its own seeds: the same result whether folds run in turn or in parallel processes."""
    set_threads(threads, device)
    seed_everything(cfg.seed, device)
    # float16 resident (half the memory: DFEW is 1.2 GiB); each gathered batch is cast to float32.
    feats = np.ascontiguousarray(features)
    # joblib hands a worker a read-only memory map; torch wants a writable array (it never writes here).
    feats = torch.from_numpy(feats if feats.flags.writeable else feats.copy()).to(device)
    labs = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    sampler = ClipSampler.from_config(cfg, feats.shape[1])
    subjects = np.asarray(subjects) if subjects is not None else np.arange(len(labels)).astype(str)
    held_out: list[EpochRecord] = []
    if cfg.epoch_select == "inner":
        epochs, held_out = select_epochs(cfg, feats, labs, np.asarray(labels), subjects, fold, n_classes, kind, progress)
        if progress is not None and epochs < cfg.epochs:
            progress.total += epochs - cfg.epochs
            progress.refresh()
        cfg = dataclasses.replace(cfg, epochs=epochs)
    torch.manual_seed(cfg.seed + fold.index)
    model = build_head(cfg, feats.shape[-1], n_classes, kind).to(device)
    # The fitted part of the input sees the training fold only (no test-fold statistics).
    model.input.fit(feats[torch.as_tensor(fold.train, device=device)], subjects[fold.train],
                    np.asarray(labels)[fold.train])
    result = train_fold(model, feats, labs, fold, sampler, cfg, seed=cfg.seed + 1000 + fold.index, progress=progress)
    result.held_out = held_out
    if probe:
        with torch.no_grad():
            x = torch.cat([model.input(feats[s:s + 256].float()) for s in range(0, len(feats), 256)]).cpu().numpy()
        result.probe = linear_probe(x, np.asarray(labels), fold.train, fold.test, cfg.seed)[:2]
    return result


def fold_processes(cfg: TrainHeadConfig, device: torch.device, n_folds: int) -> int:
    """How many folds train at once: `fold_workers`, else one per core (capped by the folds) on the CPU
    and one on a GPU."""
    return cfg.fold_workers or (min(os.cpu_count() or 1, n_folds) if device.type == "cpu" else 1)


def cross_validate(cfg: TrainHeadConfig, features: np.ndarray, labels: np.ndarray, folds: Sequence[Fold],
                   n_classes: int, *, kind: str = "ceflnet", device: torch.device | None = None,
                   desc: str = "train_head", subjects: Sequence[str] | None = None,
                   probe: bool = False, fold_features: dict[int, np.ndarray] | None = None) -> list[FoldResult]:
    """Every fold trained from its own seed schedule; fold k on `fold_features[k]` when given (rows
    aligned with `features`: `train_head.features: finetuned`, pipeline/head/finetuned.py), else on `features`.

    On the CPU, folds run in parallel processes with one thread each (`fold_workers`, default one
    per core): a head this small is matmul-latency bound at batch 8, and two single-threaded folds
    finish sooner than one fold on two threads (bench/bench_head.py). On a GPU folds run in turn.
    """
    device = device or resolve_device(cfg.device)
    warn_if_emulated(device, cfg.precision, "train_head.precision", log)
    workers = fold_processes(cfg, device, len(folds))

    def feats_of(fold: Fold) -> np.ndarray:
        return features if fold_features is None else fold_features[fold.index]

    if workers > 1 and device.type == "cpu" and len(folds) > 1:
        from joblib import Parallel, delayed

        release_idle_workers()  # a pool left by detect/manifest would recycle these workers mid-run
        jobs = (delayed(_train_one)(cfg, feats_of(f), labels, f, n_classes, kind, device, cfg.threads or 1,
                                    subjects=subjects, probe=probe) for f in folds)
        results = list(tqdm(Parallel(n_jobs=workers, return_as="generator")(jobs), total=len(folds),
                            desc=f"{desc} ({workers} folds at a time)", unit="fold", leave=False))
        return sorted(results, key=lambda r: r.fold)
    results = []
    passes = 2 if cfg.epoch_select == "inner" else 1  # the held-out run, then the fold (shortened as chosen)
    with tqdm(total=len(folds) * cfg.epochs * passes, desc=desc, unit="epoch", leave=False) as bar:
        for fold in folds:
            results.append(_train_one(cfg, feats_of(fold), labels, fold, n_classes, kind, device, cfg.threads, bar,
                                      subjects=subjects, probe=probe))
    return results


# --------------------------------------------------------------------------- checkpoints


def head_params(state_dict: dict) -> int:
    """Trained parameters of a head (the input transform's fitted statistics are not parameters)."""
    return int(sum(v.numel() for k, v in state_dict.items() if not k.startswith("input.")))


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


def load_head(path: Path, device: str | torch.device = "cpu") -> LoadedHead:
    """Rebuild a fold checkpoint (`fold-k.pt`) in eval mode, ready for prediction."""
    ck = torch.load(Path(path), map_location=device, weights_only=True)
    raw = dict(ck["train_head"])
    raw["test_frame_offsets"] = tuple(raw["test_frame_offsets"])
    known = {f.name for f in dataclasses.fields(TrainHeadConfig)}
    raw.setdefault("clip_kernel", 3)  # checkpoints from before the parameter were trained with kernel 3
    cfg = TrainHeadConfig(**{k: v for k, v in raw.items() if k in known})
    # in_dim is the backbone's feature width; the head's input may be wider (two_stream)
    model = build_head(cfg, input_dim(cfg.center, ck["in_dim"]), len(ck["class_names"]), ck["kind"]).to(device)
    state = ck["state_dict"]
    if not any(k.startswith("input.") for k in state):  # a checkpoint from before the input transform
        state = {**{f"head.{k}": v for k, v in state.items()}, **{f"input.{k}": v for k, v in model.input.state_dict().items()}}
    model.load_state_dict(state)
    model.eval()
    return LoadedHead(model, list(ck["class_names"]), int(ck["in_dim"]), cfg, ck["kind"], int(ck["fold"]),
                      list(ck["test_video_ids"]), dict(ck["provenance"]))
