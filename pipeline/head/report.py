"""Turning fold results into the published artefacts: metrics.json, predictions.csv, figures, report.md.

Shared by `train_head` (writes everything once) and `evaluate` (rebuilds it from predictions.csv and
the fold checkpoints without retraining).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.io import atomic_path


@dataclass
class Prediction:
    """One row of predictions.csv."""

    video_id: str
    fold: int
    true: str
    predicted: str
    probs: dict[str, float]
    rich_clip_start: int
    """Original frame number where the emotion-rich clip starts (via the cache's frame_index)."""
    rich_clip_end: int


def write_predictions(path: Path, preds: Sequence[Prediction], class_names: Sequence[str]) -> None:
    cols = ["video_id", "fold", "true", "predicted", *[f"prob_{c}" for c in class_names],
            "rich_clip_start", "rich_clip_end"]
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for p in preds:
            w.writerow([p.video_id, p.fold, p.true, p.predicted, *[f"{p.probs[c]:.6f}" for c in class_names],
                        p.rich_clip_start, p.rich_clip_end])


def read_predictions(path: Path) -> tuple[list[Prediction], list[str]]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        classes = [c[len("prob_"):] for c in reader.fieldnames or [] if c.startswith("prob_")]
        preds = [Prediction(r["video_id"], int(r["fold"]), r["true"], r["predicted"],
                            {c: float(r[f"prob_{c}"]) for c in classes},
                            int(r["rich_clip_start"]), int(r["rich_clip_end"])) for r in reader]
    return preds, classes


# --------------------------------------------------------------------------- numbers


def war_uar(true: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """WAR = accuracy, UAR = mean recall over the classes present in `true`; both in percent."""
    war = float((true == pred).mean() * 100) if len(true) else float("nan")
    recalls = [float((pred[true == c] == c).mean()) for c in np.unique(true)]
    return war, float(np.mean(recalls) * 100) if recalls else float("nan")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single fold), rounded for the report."""
    v = np.asarray(values, dtype=float)
    return round(float(v.mean()), 2), round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 2)


def per_class_recall(true: np.ndarray, pred: np.ndarray, class_names: Sequence[str]) -> dict[str, float | None]:
    return {c: (round(float((pred[true == i] == i).mean() * 100), 2) if (true == i).any() else None)
            for i, c in enumerate(class_names)}


def overlaps(start: int, end: int, span: tuple[int, int] | None) -> bool | None:
    """Does [start, end] meet the apex span (inclusive)? None when the span is unknown."""
    return None if span is None else bool(start <= span[1] and end >= span[0])


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (CI, servers)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(path: Path, true: np.ndarray, pred: np.ndarray, class_names: Sequence[str], title: str) -> None:
    plt = _plt()
    c = len(class_names)
    cm = np.zeros((c, c), dtype=int)
    np.add.at(cm, (true, pred), 1)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * c + 2, 1.1 * c + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j] * 100:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(c), class_names, rotation=45, ha="right")
    ax.set_yticks(range(c), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


@dataclass
class ActivationExample:
    video_id: str
    true: str
    predicted: str
    clip_frames: list[tuple[int, int]]
    """Each clip's first and last original frame number."""
    scores: np.ndarray  # (n_clips,) the predicted class's clip attention (eq. 5)
    rich_clip: int
    apex: tuple[int, int] | None
    located: np.ndarray | None = None
    """(n_clips,) the map the emotion-rich clip was read from, where it is not the head's (`train_head.rich_clip:
    probe`: the fused probe's, pipeline/head/fusion.py)."""


def plot_activation_maps(path: Path, examples: Sequence[ActivationExample]) -> None:
    """Clip scores over time per video: where the head (and, reading the rich clip, the probe) thinks the expression
    is, against the apex."""
    plt = _plt()
    n = max(len(examples), 1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.0 * n + 0.5), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        centres = [(a + b) / 2 for a, b in ex.clip_frames]
        ax.plot(centres, ex.scores, "o-", color="tab:blue", label="head (eq. 5)")
        top = float(ex.scores.max())
        if ex.located is not None:
            ax.plot(centres, ex.located, "s--", color="tab:purple", label="probe (reads the rich clip)")
            top = max(top, float(ex.located.max()))
        a, b = ex.clip_frames[ex.rich_clip]
        ax.axvspan(a, b, color="tab:orange", alpha=0.3, label="emotion-rich clip (P_e)")
        if ex.apex is not None:
            ax.axvspan(ex.apex[0], ex.apex[1], color="tab:green", alpha=0.25, label="annotated apex")
        ax.set_ylim(0, max(1e-3, top) * 1.15)
        ax.set_ylabel("clip score")
        ax.set_title(f"{ex.video_id}: true {ex.true}, predicted {ex.predicted}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("original frame number")
    if not examples:
        axes[0, 0].text(0.5, 0.5, "no test videos", ha="center")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


TSNE_MIN_VIDEOS = 30
"""Below this, t-SNE (perplexity < n/3, a handful of neighbours) scatters points whatever the embedding
holds: a picture that looks like a result and is noise. The figure says so instead."""


def plot_tsne(path: Path, embedding: np.ndarray | None, labels: np.ndarray, class_names: Sequence[str],
              seed: int):
    """t-SNE of the embeddings; `embedding=None` (evaluate.tsne off) or fewer than `TSNE_MIN_VIDEOS` videos
    write a figure saying why there is no map. Returns the (closed) figure."""
    from sklearn.manifold import TSNE

    plt = _plt()
    why = ("t-SNE turned off (evaluate.tsne: false)" if embedding is None else
           f"t-SNE not drawn: {len(embedding)} test videos (fewer than {TSNE_MIN_VIDEOS});\n"
           "a 2-D map of so few points shows no structure worth reading" if len(embedding) < TSNE_MIN_VIDEOS else None)
    if why:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, why, ha="center", va="center")
        ax.axis("off")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
        return fig
    n = len(embedding)
    # perplexity must stay below the number of points; tiny test caches need a small one.
    xy = TSNE(n_components=2, perplexity=float(min(30, max(2, (n - 1) // 3))), init="pca",
              random_state=seed).fit_transform(embedding.astype(np.float64))
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, c in enumerate(class_names):
        m = labels == i
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=12, label=c)
    ax.legend(fontsize=7, markerscale=1.5)
    ax.set_title("t-SNE of test-video embeddings (each from its fold's head)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return fig


def write_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------- history (plots as data)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_war", "test_uar")


def write_history(path: Path, records: Sequence) -> None:
    """One fold's per-epoch history as CSV (DVC plots overlay it across experiments)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HISTORY_COLUMNS)
        for r in records:
            w.writerow([r.epoch, *(f"{getattr(r, c):.4f}" for c in HISTORY_COLUMNS[1:])])


def plot_training_curves(path: Path, histories: dict[int, Sequence]):
    """Train vs test loss and train accuracy vs test WAR per epoch, one line per fold, whole-epoch ticks.
    Returns the (closed) figure."""
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (fold, recs) in enumerate(sorted(histories.items())):
        ep = [r.epoch for r in recs]
        colour = f"C{k % 10}"
        ax_loss.plot(ep, [r.train_loss for r in recs], color=colour, alpha=0.5, label=f"fold {fold} train")
        ax_loss.plot(ep, [r.test_loss for r in recs], color=colour, ls="--", label=f"fold {fold} test")
        ax_acc.plot(ep, [r.train_acc for r in recs], color=colour, alpha=0.5)
        ax_acc.plot(ep, [r.test_war for r in recs], color=colour, ls="--")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (solid: train, dashed: test fold)")
    ax_acc.set(xlabel="epoch", ylabel="%", title="train accuracy (solid) vs test WAR (dashed)")
    if len(histories) <= 10:
        ax_loss.legend(fontsize=6, ncol=2)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.25
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return fig
