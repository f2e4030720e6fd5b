"""Figures say the truth, read from the figure's own data (axis limits, texts, tick values), not by eye."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from pipeline.commands.predict import CHANCE_MARGIN, chance_note, plot_prediction
from pipeline.head.fusion import rich_clips
from pipeline.head.report import TSNE_MIN_VIDEOS, plot_training_curves, plot_tsne

CLASSES = ["happiness", "sadness"]


def _predict_fig(tmp_path, probs, per_head, scores):
    n = scores.shape[1]
    clips = [(10 * k, 10 * k + 9) for k in range(n)]
    thumbs = np.full((n, 8, 8, 3), 128, np.uint8)
    note = chance_note(probs, per_head, CLASSES)
    rich = int(rich_clips(torch.from_numpy(scores)[None], torch.from_numpy(probs)[None])[0])
    fig = plot_prediction(tmp_path / "v_clips.png", "v.mp4", scores, CLASSES, int(probs.argmax()), probs, clips,
                          thumbs, 25.0, note, rich)
    assert (tmp_path / "v_clips.png").stat().st_size > 0
    return fig, fig.axes[0]


def test_clip_scores_on_a_fixed_axis_with_the_chance_note(tmp_path):
    """Near-uniform scores (0.1415-0.145, as a 50/50 prediction gave) must not fill the axis."""
    scores = np.array([[0.1415, 0.145, 0.143, 0.1425, 0.144, 0.1435, 0.142],
                       [0.1430, 0.142, 0.144, 0.1435, 0.142, 0.1440, 0.143]])
    probs = np.array([0.51, 0.49])
    fig, ax = _predict_fig(tmp_path, probs, np.array([[0.53, 0.47], [0.49, 0.51]]), scores)
    assert ax.get_ylim() == (0.0, 1.0)
    notes = [t.get_text() for t in ax.texts]
    assert any(t.startswith("AT CHANCE") and "51%" in t and "49%" in t for t in notes), notes
    # The y label lies inside the figure (it was cut off at the left edge).
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot closed the figure: a canvas of its own
    fig.draw(renderer)
    label = ax.yaxis.label.get_window_extent(renderer)
    assert ax.yaxis.label.get_text().startswith("clip score") and label.x0 >= 0, label


def test_a_clear_prediction_has_no_chance_note(tmp_path):
    scores = np.array([[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    fig, ax = _predict_fig(tmp_path, np.array([0.8, 0.2]), np.array([[0.82, 0.18], [0.78, 0.22]]), scores)
    assert ax.get_ylim() == (0.0, 1.0) and not ax.texts


def test_chance_margin_grows_with_the_heads_disagreement():
    probs = np.array([0.60, 0.40])  # a 20-point margin: clear for agreeing heads...
    assert chance_note(probs, np.array([[0.61, 0.39], [0.59, 0.41]]), CLASSES) is None
    # ...within noise when the fold heads disagree about which class wins
    assert chance_note(probs, np.array([[0.95, 0.05], [0.25, 0.75]]), CLASSES).startswith("AT CHANCE")
    just = 0.5 + CHANCE_MARGIN / 2 - 0.001
    assert chance_note(np.array([just, 1 - just]), np.array([[just, 1 - just]]), CLASSES) is not None


def test_tsne_is_not_drawn_for_a_handful_of_videos(tmp_path):
    rng = np.random.default_rng(0)
    few = TSNE_MIN_VIDEOS - 1
    fig = plot_tsne(tmp_path / "tsne.png", rng.normal(size=(few, 8)), rng.integers(0, 2, few), CLASSES, 0)
    (text,) = fig.axes[0].texts
    assert f"{few} test videos" in text.get_text() and "not drawn" in text.get_text()
    assert not fig.axes[0].collections  # no scatter
    fig = plot_tsne(tmp_path / "tsne.png", rng.normal(size=(TSNE_MIN_VIDEOS, 8)),
                    np.arange(TSNE_MIN_VIDEOS) % 2, CLASSES, 0)
    assert len(fig.axes[0].collections) == 2 and not fig.axes[0].texts  # one scatter per class


def test_training_curves_have_whole_epoch_ticks(tmp_path):
    rec = [SimpleNamespace(epoch=e, train_loss=1 / e, test_loss=1.2 / e, train_acc=50 + e, test_war=40 + e)
           for e in (1, 2, 3)]
    fig = plot_training_curves(tmp_path / "curves.png", {0: rec, 1: rec})
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
