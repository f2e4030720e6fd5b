"""Sanity numbers printed beside every result, so a reader sees at once what the head adds.

- chance: a fold is flagged `near_chance` when its correct count is within binomial noise of always
  answering the majority class (one-sided binomial test, p > 0.05);
- a linear probe on the same input and folds: the head's input mean-pooled over the cached frames,
  standardised, multinomial logistic regression (scikit-learn defaults, C = 1). When the head does
  not beat it, the attention machinery adds nothing on that data;
- clip localisation baselines: a random clip and the centre clip, under the overlap criterion (the
  clip meets the apex span, the paper's Table 7 reading) and a strict one (the clip's centre frame lies
  inside the apex span). On short lab clips most clips overlap the apex, so the overlap figure alone
  flatters any method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.head.report import war_uar

NEAR_CHANCE_P = 0.05


def near_chance(n_correct: int, n: int, chance: float) -> bool:
    """True when `n_correct` of `n` is not significantly above the `chance` rate (0..1)."""
    from scipy.stats import binomtest

    if n == 0:
        return True
    return bool(binomtest(int(n_correct), int(n), float(chance), alternative="greater").pvalue > NEAR_CHANCE_P)


def probe_estimator(seed: int = 0, C: float = 1.0):
    """The probe unfitted: StandardScaler then LogisticRegression of inverse regularisation strength C (a
    scikit-learn pipeline, so cross-validation refits the scaler on each split's training rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def fit_probe(x: np.ndarray, labels: np.ndarray, seed: int = 0, C: float = 1.0):
    """(StandardScaler, LogisticRegression) of `probe_estimator` fitted on (N, D) pooled inputs of at least two
    classes."""
    pipe = probe_estimator(seed, C).fit(x, labels)
    return pipe[0], pipe[1]


@dataclass(frozen=True)
class Probe:
    """The linear probe in closed form: probs = softmax(((x - mean) / scale) @ weight.T + bias) over every class.

    The one fitted probe behind both of its uses: the WAR reported beside the head's (`linear_probe`) and the
    half that `train_head.fusion: probe` averages with the head (pipeline/head/fusion.py keeps these arrays in a
    checkpoint). A class the training rows lack gets probability 0; training rows of one class (tiny datasets)
    give that class for every video, the only fit there is."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    """(n_classes, D)"""
    bias: np.ndarray
    """(n_classes,)"""

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0, C: float = 1.0) -> "Probe":
        """Fitted on (N, D) pooled training inputs with integer labels in [0, n_classes)."""
        seen = np.unique(labels)
        if len(seen) == 0:
            raise ValueError("a linear probe needs at least one training video")
        dim = x.shape[1]
        mean, scale = np.zeros(dim), np.ones(dim)
        weight, bias = np.zeros((n_classes, dim)), np.full(n_classes, -1e4)  # exp(-1e4) is 0 in float32
        if len(seen) == 1:
            bias[seen[0]] = 0.0
        else:
            scaler, clf = fit_probe(x, labels, seed, C)
            coef, icpt = clf.coef_, clf.intercept_
            if len(clf.classes_) == 2:  # sklearn's binary form: one logit z for classes_[1] -> softmax(-z/2, z/2)
                coef, icpt = np.vstack([-coef / 2, coef / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
            weight[clf.classes_], bias[clf.classes_] = coef, icpt
            mean, scale = scaler.mean_, scaler.scale_
        return cls(mean, scale, weight, bias)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias


def linear_probe(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 seed: int = 0) -> tuple[float, float, np.ndarray]:
    """(WAR, UAR, predictions) of the `Probe` on mean-pooled features, fitted on `train` rows."""
    x = features.astype(np.float32).mean(axis=1)  # (N, D)
    probe = Probe.fit(x[train], labels[train], int(np.max(labels)) + 1, seed)
    pred = probe.logits(x[test]).argmax(axis=1)
    war, uar = war_uar(labels[test], pred)
    return war, uar, pred


def sign_test(diff: Sequence[float], tol: float = 0.0) -> tuple[int, int, int, float]:
    """Paired per-fold differences -> (ahead, behind, level, two-sided sign-test p over the folds that differ);
    a difference within `tol` counts as level (two readings rounded differently)."""
    from scipy.stats import binomtest

    ahead, behind = sum(d > tol for d in diff), sum(d < -tol for d in diff)
    p = binomtest(ahead, ahead + behind).pvalue if ahead + behind else 1.0
    return ahead, behind, len(diff) - ahead - behind, float(p)


@dataclass(frozen=True)
class ClipSpans:
    """Per test video, every test clip's first, centre and last cached-frame position."""

    start: np.ndarray  # (n_clips,)
    centre: np.ndarray
    end: np.ndarray

    @classmethod
    def of(cls, n_clips: int, test_offset: int, clip_stride: int, clip_len: int) -> "ClipSpans":
        start = test_offset + np.arange(n_clips) * clip_stride
        return cls(start, start + clip_len // 2, start + clip_len - 1)


def localisation(frame_index: np.ndarray, apex: Sequence[tuple[int, int] | None], chosen: np.ndarray,
                 spans: ClipSpans) -> dict | None:
    """Hit rates (percent) of the chosen clips and of the baselines, for the videos with an apex span.

    `frame_index` (N, T) holds the original frame numbers of the N test videos' cached frames;
    `chosen` (N,) their emotion-rich clip indices.
    """
    rows = [i for i, a in enumerate(apex) if a is not None]
    if not rows:
        return None
    centre_clip = len(spans.start) // 2
    hit = {k: [] for k in ("overlap", "strict", "random_overlap", "random_strict", "centre_overlap",
                           "centre_strict")}
    for i in rows:
        a0, a1 = apex[i]
        fi = frame_index[i]
        over = (fi[spans.start] <= a1) & (fi[spans.end] >= a0)  # (n_clips,)
        strict = (fi[spans.centre] >= a0) & (fi[spans.centre] <= a1)
        c = int(chosen[i])
        hit["overlap"].append(over[c])
        hit["strict"].append(strict[c])
        hit["random_overlap"].append(over.mean())  # the expected hit of a uniformly random clip
        hit["random_strict"].append(strict.mean())
        hit["centre_overlap"].append(over[centre_clip])
        hit["centre_strict"].append(strict[centre_clip])
    out = {k: round(100 * float(np.mean(v)), 2) for k, v in hit.items()}
    out["n_videos"] = len(rows)
    return out
