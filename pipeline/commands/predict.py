"""`pipeline predict VIDEO... --model RUN_DIR`: apply trained heads to videos never seen.

Runs detect → resample → extract on each video in memory with the parameters the model's cache
was built with (recorded in its checkpoints), then averages the fold heads' probabilities. For
each video: label, class probabilities, the emotion-rich clip as frame and time ranges, and a PNG
of clip scores over time with aligned thumbnails.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from pipeline.align import align
from pipeline.config import DetectConfig, ExtractConfig, ResampleConfig
from pipeline.errors import UNREADABLE_CHECKPOINT, PipelineError, VideoError
from pipeline.io import ManifestRow, atomic_path
from pipeline.layout import ResultsLayout
from pipeline.motion import mesh_crops
from pipeline.video import probe, read_frames


@dataclass
class Prediction:
    video: str
    label: str
    probabilities: dict[str, float]
    rich_clip: int
    frame_range: tuple[int, int]
    time_range_s: tuple[float, float]
    clip_scores: list[list[float]]  # (C, n_clips) the map rich_clip is read from (softmax over clips), every class
    clip_frames: list[tuple[int, int]]  # each clip's original frame range
    figure: str
    fps: float


def _parse(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return ast.literal_eval(value)  # saved as str(dict) by older checkpoints


def _section(cls, raw: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (raw or {}).items() if k in names}
    return cls(**kw)


def find_checkpoints(model_dir: Path) -> list[Path]:
    found = sorted(model_dir.glob("fold-*.pt")) or sorted(ResultsLayout(model_dir).heads.glob("fold-*.pt"))
    if not found:
        raise PipelineError(f"no fold-*.pt checkpoints in {model_dir} (run `pipeline run train-head` first)")
    return found


def unknown_person(x: np.ndarray, head) -> np.ndarray:
    """The input of a head trained with `train_head.subject_norm` for one video whose person's other videos
    are not at hand. The person's offset is unknown, so the raw stream is set to the training mean: zero
    after the head's fitted centring, the input `raw_dropout` trains the head on; the changing stream
    (against the video's own first frames or median) never held the offset. `center: none` has no
    changing stream to fall back on: refused."""
    from pipeline.head.inputs import is_two_stream

    if not is_two_stream(head.config.center):
        if head.config.center == "none":
            raise PipelineError("this model was trained with train_head.subject_norm and center none: its input needs "
                                "each person's mean over several videos, which one video cannot give; retrain with a "
                                "two-stream center (the default) to predict single videos")
        return x  # first_frames / video_median: the offset cancels in the video's own reference
    raw = head.model.input.raw
    out = x.astype(np.float32)
    out[..., -raw:] = head.model.input.mean.cpu().numpy()
    return out.astype(x.dtype)


class Predictor:
    def __init__(self, model_dir: Path, device: str = "auto"):
        from pipeline.features import build_extractor
        from pipeline.precision import resolve_device
        from pipeline.head.sampling import ClipSampler
        from pipeline.head.train import load_head

        self.device = resolve_device(device, "--device")
        self.heads = []
        for path in find_checkpoints(model_dir):
            try:
                self.heads.append(load_head(path, self.device))
            except UNREADABLE_CHECKPOINT as err:  # truncated copy, another program's file: a message, not a trace
                raise PipelineError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}); copy it again or "
                                    "retrain with `pipeline run train-head`") from err
        head = self.heads[0]
        params = _parse(head.provenance.get("params", "{}"))
        self.detect_cfg = _section(DetectConfig, params.get("detect"))
        self.resample_cfg = _section(ResampleConfig, params.get("resample"))
        extract = _section(ExtractConfig, params.get("extract"))
        self.extract_cfg = dataclasses.replace(extract, device=device)
        self.finetuned = head.provenance.get("features") == "finetuned"
        if self.finetuned:
            # Head k was trained on fold k's adapted backbone: each head gets that backbone's features.
            from pipeline.finetune.model import trainable_extractor

            self.backbones = [_backbone_state(h) for h in self.heads]
            self.extractor = trainable_extractor(self.extract_cfg)
        else:
            self.extractor = build_extractor(self.extract_cfg)
        if self.extractor.out_dim != head.in_dim:
            raise PipelineError(f"model expects {head.in_dim}-d features, backbone gives {self.extractor.out_dim}")
        self.class_names = head.class_names
        self.sampler = ClipSampler.from_config(head.config, self.resample_cfg.n_frames)

    def predict(self, video: Path, fig: Path) -> Prediction:
        from pipeline.facetrack import detect_video
        from pipeline.resampling import choose_frames

        info = probe(video)
        row = ManifestRow(video_id=video.stem, path=str(video), label="", subject="")
        res = detect_video(row, self.detect_cfg)
        if res.track is None:
            raise VideoError(res.kind, res.message)
        idx = choose_frames(res.track.flags, self.resample_cfg)
        frames = read_frames(video, idx)
        crops = np.stack([align(frames[int(i)], res.track.landmarks[i], self.extractor.crop_size,
                                self.extractor.margin) for i in idx])
        meshes = mesh_crops(frames, idx, [res.track.landmarks[i] for i in idx], self.extractor.motion)
        from pipeline.head.fusion import rich_clips
        from pipeline.head.inputs import per_video
        from pipeline.head.train import predict as predict_head

        outs = []
        for k, h in enumerate(self.heads):
            if self.finetuned:
                self.extractor.module.load_state_dict(self.backbones[k])
                raw = self._finetuned_features(crops, meshes)
            elif k == 0:
                raw = self.extractor.video_features(crops, meshes)  # one frozen backbone serves every head
            cached = per_video(raw.astype(np.float16), h.config.center)  # as in the cache
            if getattr(h.config, "subject_norm", False):
                cached = unknown_person(cached, h)
            feats = torch.from_numpy(cached.astype(np.float32)).to(self.device)
            # the test windows train-head scored with (train_head.test_windows)
            outs.append(predict_head(h.model, feats[None], torch.zeros(1, dtype=torch.long, device=self.device),
                                     self.sampler))
        per_head = torch.stack([o["probs"][0] for o in outs]).cpu().numpy()  # (heads, C)
        probs = per_head.mean(0)
        # (C, n) the map the emotion-rich clip is read from (train_head.rich_clip: the head's eq. 5, or the probe's)
        maps = torch.stack([o["rich_map"][0] for o in outs]).mean(0).cpu()
        scores = maps.numpy()
        c = int(probs.argmax())
        rich = int(rich_clips(maps[None], torch.from_numpy(probs)[None])[0])  # of class c's map
        clip_frames, mids = [], []
        for k in range(self.sampler.n_clips):
            a, b = (int(v) for v in self.sampler.clip_span(torch.tensor(k)))  # cached positions
            clip_frames.append((int(idx[a]), int(idx[b])))
            mids.append((a + b) // 2)
        fr = clip_frames[rich]
        plot_prediction(fig, video.name, scores, self.class_names, c, probs, clip_frames, crops[mids], info.fps,
                        chance_note(probs, per_head, self.class_names), rich)
        return Prediction(str(video), self.class_names[c], {n: round(float(p), 4) for n, p in zip(self.class_names, probs)},
                          rich, fr, (round(fr[0] / info.fps, 3), round((fr[1] + 1) / info.fps, 3)),
                          scores.round(4).tolist(), clip_frames, str(fig), info.fps)


    def _finetuned_features(self, crops: np.ndarray, meshes: np.ndarray | None) -> np.ndarray:
        """(T, S, S, 3) aligned crops -> (T, D), through the loaded adapted backbone exactly as finetune
        re-extracted the per-fold caches (pipeline/finetune/model.py)."""
        from pipeline.finetune.model import features_of

        from pipeline.motion import motion_features

        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)  # (T, 3, S, S) uint8
        return np.concatenate([features_of(self.extractor, x, 64).numpy(),
                               motion_features(crops, self.extractor.motion, meshes)], axis=1)


def _backbone_state(head) -> dict:
    """Fold k's adapted backbone weights, checked against the sha256 train-head recorded for them."""
    from pipeline.io import sha256_file

    path = Path(head.provenance.get("backbone_checkpoint", ""))
    want = head.provenance.get("backbone_checkpoint_sha256")
    if not path.name or not want:
        raise PipelineError(f"fold {head.fold}'s head was trained on fine-tuned features but its checkpoint does not "
                            "say which backbone made them (trained before predict supported it): rerun "
                            "`pipeline run train-head` with train_head.features=finetuned")
    if not path.is_file():
        raise PipelineError(f"fold {head.fold}'s adapted backbone {path} is missing: the head needs the backbone its "
                            "features came from. Copy that file back (or rerun `pipeline run finetune` and "
                            "`pipeline run train-head`)")
    if sha256_file(path) != want:
        raise PipelineError(f"{path} is not the backbone fold {head.fold}'s head was trained with (sha256 differs: "
                            "finetune ran again since); rerun `pipeline run train-head` with "
                            "train_head.features=finetuned")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except UNREADABLE_CHECKPOINT as err:
        raise PipelineError(f"cannot read {path} ({type(err).__name__}: {err})") from err


def figure_names(videos: list[Path]) -> list[str]:
    """`<stem>_clips.png`, unless two inputs share a stem (`a/clip.mp4`, `b/clip.mp4`): then their path
    under the inputs' common folder (`a__clip_clips.png`), so no figure overwrites another (issue 16)."""
    stems = [v.stem for v in videos]
    resolved = [v.resolve() for v in videos]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved])) if videos else Path(".")
    names: list[str] = []
    for v, r in zip(videos, resolved):
        base = v.stem if stems.count(v.stem) == 1 else "__".join(r.relative_to(common).with_suffix("").parts)
        name, k = f"{base}_clips.png", 1
        while name in names:  # the same file given twice
            k += 1
            name = f"{base}-{k}_clips.png"
        names.append(name)
    return names


CHANCE_MARGIN = 0.10
"""Smallest top-2 probability margin that is not a coin flip. The heads are trained on a few hundred
videos at most; one video more or less in a fold moves a class probability by several points (the fold
heads of one model disagree by that much), so a margin under ten points says nothing about the video."""


def chance_note(probs: np.ndarray, per_head: np.ndarray, classes: list[str]) -> str | None:
    """Why the prediction is within noise of chance, or None. Noise: `CHANCE_MARGIN`, or, with several
    fold heads, twice the spread (std) of the heads' own margins between the same two classes if larger."""
    first, second = np.argsort(-probs)[:2]
    margin = float(probs[first] - probs[second])
    spread = float(np.std(per_head[:, first] - per_head[:, second])) if len(per_head) > 1 else 0.0
    noise = max(CHANCE_MARGIN, 2 * spread)
    if margin >= noise:
        return None
    return (f"AT CHANCE: {classes[first]} {100 * probs[first]:.0f}% vs {classes[second]} "
            f"{100 * probs[second]:.0f}% (margin {100 * margin:.0f} < {100 * noise:.0f} points of noise)")


def plot_prediction(path: Path, title: str, scores: np.ndarray, classes: list[str], c: int, probs: np.ndarray,
                    clip_frames: list[tuple[int, int]], thumbs: np.ndarray, fps: float, note: str | None, rich: int):
    """Clip scores of every class over time on a fixed [0, 1] axis (auto-scaling made flat scores look
    like swings), the emotion-rich clip `rich` shaded (`rich_clips`' choice, read from `train_head.rich_clip`'s map),
    one thumbnail per clip, `note` (`chance_note`) over the plot. Returns the (closed) figure, whose artists tests
    read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clip_frames)
    centres = np.array([(a + b) / 2 / fps for a, b in clip_frames])
    fig = plt.figure(figsize=(max(8, 1.4 * n), 5.2))
    ax = fig.add_axes([0.1, 0.42, 0.69, 0.5])  # left margin: room for the y label and its ticks
    for k, name in enumerate(classes):
        ax.plot(centres, scores[k], marker="o", lw=2.5 if k == c else 1, alpha=1 if k == c else 0.5,
                label=f"{name} {100 * probs[k]:.0f}%")
    a, b = clip_frames[rich]
    ax.axvspan(a / fps, (b + 1) / fps, color="orange", alpha=0.25, label="emotion-rich clip")
    ax.set_xlabel("time (s)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("clip score (softmax over clips)")
    if note:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="darkred",
                wrap=True, bbox={"facecolor": "white", "edgecolor": "darkred", "alpha": 0.9})
    ax.set_title(f"{title}: {classes[c]} ({100 * probs[c]:.0f}%), frames {a}-{b}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for k in range(n):  # thumbnail of each clip's middle frame
        tax = fig.add_axes([0.1 + 0.69 * k / n, 0.04, 0.69 / n * 0.95, 0.26])
        tax.imshow(thumbs[k])
        tax.set_axis_off()
        tax.set_title(f"clip {k}", fontsize=7, color="darkorange" if k == rich else "black")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")  # nothing cut: labels, legend
    plt.close(fig)
    return fig


@click.command("predict")
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A train-head results folder (<results_root>/D/) holding fold-*.pt checkpoints.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where PNGs and predictions.json go (default: <model>/predict/).")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
def command(videos: tuple[Path, ...], model_dir: Path, out_dir: Path | None, device: str) -> None:
    """Predict the expression of each VIDEO with a trained model: label, class probabilities, the
    emotion-rich clip as frame and time ranges, and a PNG of clip scores over time with thumbnails.

    Reads the videos and RUN_DIR's checkpoints (which record how their features were made); writes
    <out>/<video>_clips.png (the path under the inputs' common folder when two share a name) and
    <out>/predictions.json (every input, with `status` ok or the failure kind, and `reason`). Exit 1 when
    a video has no usable face.
    """
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out_dir = out_dir or model_dir / "predict"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        predictor = Predictor(model_dir, device)
    except PipelineError as err:
        click.secho(f"error: {err}", fg="red", err=True)
        sys.exit(err.exit_code)
    results, failed = [], 0
    # Every input gets an entry (status ok, or the failure kind and its reason), in input order.
    for video, fig_name in zip(videos, figure_names(list(videos))):
        try:
            p = predictor.predict(video, out_dir / fig_name)
        except VideoError as err:
            failed += 1
            what = "no face found" if err.kind in ("no_face", "no_span") else "cannot read the video"
            click.secho(f"error: {video}: {what} ({err.kind}: {err.message})", fg="red", err=True)
            results.append({"video": str(video), "status": err.kind, "reason": f"{what}: {err.message}"})
            continue
        results.append({"video": str(video), "status": "ok", "reason": "", **dataclasses.asdict(p)})
        top = sorted(p.probabilities.items(), key=lambda kv: -kv[1])[:3]
        click.echo(f"{video}: {p.label}  ({', '.join(f'{k} {100 * v:.1f}%' for k, v in top)})\n"
                   f"  emotion-rich clip {p.rich_clip}: frames {p.frame_range[0]}-{p.frame_range[1]}, "
                   f"{p.time_range_s[0]:.2f}-{p.time_range_s[1]:.2f} s\n  figure: {p.figure}")
    with atomic_path(out_dir / "predictions.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    if failed:
        sys.exit(1)
