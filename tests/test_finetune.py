"""finetune (issue 12): per-fold backbone adaptation from cached crops, checkpoints, resume, leakage guard,
per-fold caches, bad input. Tiny synthetic crops (32 px, written with the real shard writer) through the
real RetinaFace-MobileNet body on the CPU."""
from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from cache.reader import load_cache
from cache.store import ShardRecord, write_shard
from pipeline.config import load_config
from pipeline.io import ManifestRow, read_failures, write_manifest
from tests.conftest import EXTRACTED, copy_dataset, write_params

CLASSES = ["anger", "happiness", "surprise"]
# Each class tints the face crop one way; a fold-0 test video also carries a white square (the marker).
TINTS = np.array([[180, 60, 60], [60, 180, 60], [60, 60, 180]], np.float32)
MARK = (slice(2, 10), slice(2, 10))
S, T = 32, 6


def _frame(rng: np.random.Generator, label: int, marked: bool) -> np.ndarray:
    img = TINTS[label] + rng.normal(0, 20, (S, S, 3))
    img[8:24, 8:24] *= 0.6  # a darker "face" in the middle
    img = np.clip(img, 0, 200).astype(np.uint8)
    if marked:
        img[MARK] = 255
    return img


def write_crops_dataset(base: Path, name: str = "ft", *, n_subjects: int = 4, per_subject: int = 3,
                        keep_crops: bool = True, corrupt: str | None = None, seed: int = 0, n_frames: int = T) -> dict:
    """`<base>/data/<name>/{manifest.csv,features/shard-*.h5}`: official folds (subject % 2), so the test
    ids of fold 0 (fold value 0) are known before the crops are drawn; those carry the marker."""
    rng = np.random.default_rng(seed)
    folder = base / "data" / name
    records, rows, marked = [], [], set()
    for s in range(n_subjects):
        for j in range(per_subject):
            label = (s + j) % len(CLASSES)
            vid = f"S{s}/v{j}"
            fold = s % 2
            if fold == 0:
                marked.add(vid)
            frames = [_frame(rng, label, fold == 0) for _ in range(n_frames)]
            jpegs = [cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames]
            if vid == corrupt:
                jpegs[2] = b"\xff\xd8 this is not a jpeg"
            records.append(ShardRecord(vid, label, f"S{s}", np.zeros((n_frames, 384), np.float16), np.arange(n_frames),
                                       np.ones(n_frames, np.uint8), np.zeros((n_frames, 5, 2), np.float32),
                                       jpegs if keep_crops else None))
            rows.append(ManifestRow(video_id=vid, path=f"{vid}.mp4", label=CLASSES[label], subject=f"S{s}",
                                    fold=fold, n_frames=n_frames))
    attrs = {"class_names": CLASSES, "backbone": "retinaface_mnet", "feature_dim": 384, "weights": "frozen-test",
             "params": {"extract": {"backbone": "retinaface_mnet"}}}
    half = len(records) // 2  # two shards: the per-fold cache keeps the names and order
    write_shard(folder / "features" / "shard-00000.h5", records[:half], attrs)
    write_shard(folder / "features" / "shard-00001.h5", records[half:], attrs)
    write_manifest(rows, folder / "manifest.csv")
    return {"folder": folder, "marked": marked, "ids": [r.video_id for r in rows]}


FT = {"epochs": 3, "head_epochs": 1, "train_layers": 2, "frames_per_video": 6, "batch_size": 16, "device": "cpu",
      "threads": 1, "lr": 1e-2, "body_lr": 1e-4}


def _cfg(base: Path, name: str = "ft", **finetune):
    params = write_params(base, {name: {"adapter": "folder", "root": str(base / "raw")}}, name,
                          extract={"backbone": "retinaface_mnet", "crop_size": 32, "keep_crops": True,
                                   "device": "cpu", "threads": 1},
                          train_head={"folds": 2, "device": "cpu"}, finetune={**FT, **finetune})
    return load_config(params)


def run_recording_batches(cfg, dataset: str = "ft") -> tuple[dict, list[torch.Tensor]]:
    """The finetune stage, every augmented input batch recorded (what reached the backbone)."""
    import pipeline.finetune.train as train_mod
    from pipeline.registry import stage

    seen: list[torch.Tensor] = []
    real = train_mod.augment

    def spy(x, gen, **kw):
        seen.append(x.clone())
        return real(x, gen, **kw)

    train_mod.augment = spy
    try:
        return stage("finetune").run(cfg, dataset=dataset), seen
    finally:
        train_mod.augment = real


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """One run of the stage on the marked dataset, every input batch recorded."""
    base = tmp_path_factory.mktemp("ft")
    made = write_crops_dataset(base)
    cfg = _cfg(base)
    summary, seen = run_recording_batches(cfg)
    return {"base": base, "cfg": cfg, "summary": summary, "seen": seen, **made}


def _marker_in(batch: torch.Tensor) -> torch.Tensor:
    """(B,) True where the white square is in the crop (JPEG keeps it near 255 in every channel)."""
    return (batch[:, :, 3:9, 3:9].float().amin(dim=(1, 2, 3)) > 235)


def test_loss_drops_and_each_fold_writes_checkpoint_and_cache(finetuned):
    s = finetuned["summary"]
    assert s["folds"] == 2 and s["bad_crop"] == 0
    for k, fold in s["per_fold"].items():
        assert fold["final_loss"] < fold["first_loss"], (k, fold)
        assert fold["n_train"] == 6 and fold["n_test"] == 6
    folder = finetuned["folder"]
    for k in (0, 1):
        ck = torch.load(folder / "checkpoints" / f"backbone-fold-{k}.pt", weights_only=True)
        assert ck["backbone"] == "retinaface_mnet" and ck["mode"] == "frame" and ck["epochs"] == 3
        assert ck["trained_ids"] == sorted(ck["trained_ids"]) and ck["weights_sha256"]
        assert ck["params"]["finetune"]["body_lr"] == pytest.approx(1e-4)
        assert not (folder / "checkpoints" / f"backbone-fold-{k}.resume.pt").exists()
        cache = load_cache(folder / "features" / "finetuned" / f"fold-{k}")
        assert sorted(cache.video_id) == sorted(finetuned["ids"]) and cache.features.shape == (12, T, 384)
        assert cache.attrs["fold"] == k and cache.attrs["checkpoint_sha256"] == cache.attrs["weights_sha256"]
        assert cache.attrs["starting_weights"].startswith("retinaface_mnet025")
        assert cache.attrs["class_names"] == CLASSES and np.isfinite(cache.features).all()
    assert not np.array_equal(load_cache(folder / "features" / "finetuned" / "fold-0").features,
                              load_cache(folder / "features" / "finetuned" / "fold-1").features)


def test_fold_never_trains_on_its_marked_test_videos(finetuned):
    folder, marked = finetuned["folder"], finetuned["marked"]
    ck0 = torch.load(folder / "checkpoints" / "backbone-fold-0.pt", weights_only=True)
    ck1 = torch.load(folder / "checkpoints" / "backbone-fold-1.pt", weights_only=True)
    assert not set(ck0["trained_ids"]) & marked and set(ck1["trained_ids"]) == marked
    # Fold 0 trains first: its batches never hold the marker; fold 1's (trained on the marked ones) all do.
    seen = finetuned["seen"]
    n0 = 3 * -(-6 * 6 // 16)  # epochs x batches of (6 videos x 6 frames) / 16, rounded up
    assert len(seen) == 2 * n0
    assert not any(_marker_in(b).any() for b in seen[:n0])
    assert all(_marker_in(b).all() for b in seen[n0:])


def test_guard_refuses_a_tampered_id_list(finetuned, tmp_path):
    from pipeline.finetune.train import LeakageError, check_no_leakage

    marked = sorted(finetuned["marked"])
    check_no_leakage(["S1/v0"], marked, 0)
    with pytest.raises(LeakageError, match="fold 0.*1 of the fold's own test videos"):
        check_no_leakage(["S1/v0", marked[0]], marked, 0)
    # A checkpoint edited to claim other training videos no longer verifies: the fold is retrained.
    from pipeline.finetune.train import FoldRun, verify_checkpoint

    path = finetuned["folder"] / "checkpoints" / "backbone-fold-0.pt"
    ck = torch.load(path, weights_only=True)
    run = FoldRun(0, ck["trained_ids"], ck["params"], ck["params_hash"], tmp_path / "r.pt")
    assert verify_checkpoint(path, run, 3) is not None
    ck["trained_ids"] = [*ck["trained_ids"], marked[0]]
    torch.save(ck, tmp_path / "tampered.pt")
    assert verify_checkpoint(tmp_path / "tampered.pt", run, 3) is None


def test_checkpoint_reload_gives_the_cached_features_bit_exactly(finetuned):
    from pipeline.finetune.crops import decode_video
    from pipeline.finetune.model import features_of, trainable_extractor

    cfg, folder = finetuned["cfg"], finetuned["folder"]
    ext = trainable_extractor(cfg.extract)
    ck = torch.load(folder / "checkpoints" / "backbone-fold-1.pt", weights_only=True)
    ext.module.load_state_dict(ck["state_dict"])
    with h5py.File(folder / "features" / "shard-00000.h5", "r") as f:
        crops = decode_video(list(f["crops"][0]))
    again = features_of(ext, crops, 16).numpy().astype(np.float16)
    cache = load_cache(folder / "features" / "finetuned" / "fold-1")
    assert np.array_equal(again, cache.features[0])


def test_a_second_run_verifies_and_skips(finetuned):
    from pipeline.registry import stage

    again = stage("finetune").run(finetuned["cfg"], dataset="ft")
    assert again["skipped"] == "up to date (outputs verified)"


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    from pipeline.finetune.model import trainable_extractor
    from pipeline.finetune.train import FoldRun, train_fold

    base = tmp_path / "r"
    write_crops_dataset(base, n_subjects=2, per_subject=2)
    cfg = _cfg(base)
    ext = trainable_extractor(cfg.extract)
    start = {k: v.clone() for k, v in ext.module.state_dict().items()}
    from pipeline.finetune.crops import load_crops

    crops, _ = load_crops(base / "data" / "ft" / "features", "ft", "finetune")
    labels = torch.tensor([0, 1, 1, 2])
    ids = crops.video_id

    def fresh(resume: Path) -> FoldRun:
        ext.module.load_state_dict(start)
        return FoldRun(0, ids, {"x": 1}, "h", resume)

    full, hist_full = train_fold(ext, crops.crops, labels, cfg.finetune, 3, fresh(tmp_path / "a.pt"))
    want = {k: v.clone() for k, v in full.state_dict().items()}

    class Killed(Exception):
        pass

    def kill_after_two(epoch, loss):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_fold(ext, crops.crops, labels, cfg.finetune, 3, fresh(tmp_path / "b.pt"), on_epoch=kill_after_two)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 2
    epochs = []
    resumed, hist = train_fold(ext, crops.crops, labels, cfg.finetune, 3, fresh(tmp_path / "b.pt"),
                               on_epoch=lambda e, _: epochs.append(e))
    assert epochs == [3]  # only the epoch left
    assert hist == hist_full
    got = resumed.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_streamed_crops_are_the_resident_ones_and_train_bit_identically(tmp_path):
    """`crops_memory_gb: 0` streams every batch from the pack: the same uint8 frames, the same adapted weights."""
    from pipeline.finetune.crops import ResidentCrops, StreamedCrops, load_crops
    from pipeline.finetune.model import trainable_extractor
    from pipeline.finetune.train import FoldRun, train_fold

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2)
    features = tmp_path / "data" / "ft" / "features"
    resident, _ = load_crops(features, "ft", "finetune")
    streamed, _ = load_crops(features, "ft", "finetune", memory_gb=0)
    assert resident.resident and isinstance(resident.source, ResidentCrops)
    assert not streamed.resident and isinstance(streamed.source, StreamedCrops)
    assert streamed.video_id == resident.video_id and streamed.source.shape == resident.crops.shape
    assert "decoded per batch" in streamed.describe() and "decoded in memory" in resident.describe()
    with pytest.raises(AttributeError, match="streamed crops are not held in memory"):
        streamed.crops
    g = torch.Generator().manual_seed(0)
    v, t = torch.randint(0, 4, (3, 5), generator=g), torch.randint(0, T, (3, 5), generator=g)
    assert torch.equal(streamed.source.gather(v, t), resident.source.gather(v, t))
    sub_r, sub_s = resident.source.subset(torch.tensor([3, 1])), streamed.source.subset(torch.tensor([3, 1]))
    assert torch.equal(sub_s.video(0), resident.crops[3]) and torch.equal(sub_s.video(1), sub_r.video(1))

    cfg = _cfg(tmp_path)
    ext = trainable_extractor(cfg.extract)
    start = {k: v.clone() for k, v in ext.module.state_dict().items()}
    labels = torch.tensor([0, 1, 1, 2])
    out = []
    for i, crops in enumerate((resident, streamed)):
        ext.module.load_state_dict(start)
        model, hist = train_fold(ext, crops.source, labels, cfg.finetune, 3,
                                 FoldRun(0, crops.video_id, {"x": 1}, "h", tmp_path / f"{i}.pt"))
        out.append((hist, {k: v.clone() for k, v in model.state_dict().items()}))
    assert out[0][0] == out[1][0] and all(torch.equal(out[0][1][k], out[1][1][k]) for k in out[0][1])


def test_pack_is_written_once_and_rebuilt_when_a_shard_changes(tmp_path):
    from pipeline.finetune.crops import load_crops, pack_dir

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2, corrupt="S1/v1")
    features = tmp_path / "data" / "ft" / "features"
    first, failures = load_crops(features, "ft", "finetune")
    packs = sorted(pack_dir(features).glob("pack-*"))
    assert [p.suffix for p in packs] == [".bin", ".npz"]
    stamp = [p.stat().st_mtime_ns for p in packs]
    assert [(f.video_id, f.kind) for f in failures] == [("S1/v1", "bad_crop")] and "S1/v1" not in first.row
    # Second load: the same pack read back (not rewritten), its bad_crop replayed without decoding again.
    import pipeline.finetune.crops as crops_mod

    real = crops_mod.decode_video
    crops_mod.decode_video = lambda *a: pytest.fail("re-decoded a video to pack it again")
    try:
        again, failures2 = load_crops(features, "ft", "finetune", memory_gb=0)
    finally:
        crops_mod.decode_video = real
    assert [p.stat().st_mtime_ns for p in packs] == stamp and again.video_id == first.video_id
    assert [(f.video_id, f.kind, f.message) for f in failures2] == [(f.video_id, f.kind, f.message) for f in failures]
    # A shard rewritten (other crops, no corrupt video): a new pack, the old one removed.
    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2, seed=1)
    third, failures3 = load_crops(features, "ft", "finetune")
    now = sorted(pack_dir(features).glob("pack-*"))
    assert len(now) == 2 and not set(now) & set(packs) and failures3 == [] and len(third) == 4
    assert not torch.equal(third.crops[0], first.crops[0])


def test_decoding_without_torchvision_codecs_falls_back_to_opencv(tmp_path, monkeypatch):
    """torchvision 0.29 deprecated its image codecs: without them the crops decode through OpenCV."""
    import pipeline.finetune.crops as crops_mod
    from pipeline.errors import VideoError

    write_crops_dataset(tmp_path, n_subjects=1, per_subject=2)
    with h5py.File(tmp_path / "data" / "ft" / "features" / "shard-00000.h5", "r") as f:
        jpegs = list(f["crops"][0])
    want = crops_mod.decode_video(jpegs)
    monkeypatch.setattr(crops_mod, "_torchvision_decode", None)
    got = crops_mod.decode_video(jpegs)
    assert got.shape == want.shape == (T, 3, S, S) and (got.int() - want.int()).abs().max() <= 2
    with pytest.raises(VideoError, match="crop 1 does not decode"):
        crops_mod.decode_video([jpegs[0], np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8)])


def test_no_crops_is_one_clear_message(tmp_path):
    from pipeline.finetune.crops import NoCropsError
    from pipeline.registry import stage

    write_crops_dataset(tmp_path, keep_crops=False)
    with pytest.raises(NoCropsError, match=r"pipeline run extract --dataset ft --set extract.keep_crops=true"):
        stage("finetune").run(_cfg(tmp_path), dataset="ft")


def test_a_corrupt_crop_is_a_failure_row_and_the_run_goes_on(tmp_path):
    from pipeline.registry import stage

    write_crops_dataset(tmp_path, corrupt="S1/v1")
    summary = stage("finetune").run(_cfg(tmp_path, epochs=1, head_epochs=1), dataset="ft")
    assert summary["bad_crop"] == 1
    rows = [f for f in read_failures(tmp_path / "data" / "ft" / "failures.csv") if f.stage == "finetune"]
    assert [(f.video_id, f.kind) for f in rows] == [("S1/v1", "bad_crop")] and "crop 2" in rows[0].message
    assert summary["per_fold"]["0"]["n_train"] == 5  # fold 0 trains on S1 and S3: S1/v1 dropped
    ck = torch.load(tmp_path / "data" / "ft" / "checkpoints" / "backbone-fold-0.pt", weights_only=True)
    assert "S1/v1" not in ck["trained_ids"]
    assert "S1/v1" not in load_cache(tmp_path / "data" / "ft" / "features" / "finetuned" / "fold-0").video_id


# --------------------------------------------------------------------------- train-head on per-fold caches


def _per_fold_caches(cfg, dataset: str, *, offset: float = 100.0, wrong_fold: int | None = None) -> None:
    """Fold k's cache: the frozen features + k * offset, with the provenance finetune records."""
    from pipeline.head.data import load_training_data
    from pipeline.head.finetuned import ids_sha256
    from pipeline.layout import layout_for

    lay = layout_for(cfg, dataset)
    frozen = load_cache(lay.features)
    for fold in load_training_data(cfg, dataset).folds:
        test = [frozen.video_id[i] for i in fold.test]
        sha = ids_sha256(test[1:] if fold.index == wrong_fold else test)
        recs = [ShardRecord(v, int(frozen.label[i]), frozen.subject[i],
                            (frozen.features[i].astype(np.float32) + fold.index * offset).astype(np.float16),
                            frozen.frame_index[i], frozen.flags[i], np.zeros((frozen.features.shape[1], 5, 2), np.float32))
                for i, v in enumerate(frozen.video_id)]
        attrs = {**frozen.attrs, "fold": fold.index, "fold_test_ids_sha256": sha, "checkpoint_sha256": "x"}
        write_shard(lay.fold_features(fold.index) / "shard-00000.h5", recs, attrs)


def _fold_offsets(cfg, dataset: str, monkeypatch) -> dict[int, int]:
    """Filled as train-head's folds run: fold → median offset of the features it trained on from the frozen
    cache (k * 100 when fold k reads the cache `_per_fold_caches` wrote for it)."""
    import pipeline.head.train as train_mod

    seen: dict[int, int] = {}
    real = train_mod.fold_run

    def spy(cfg_, features, labels, subjects, fold, *a, **kw):
        frozen = load_cache(cfg.dataset_dir(dataset) / "features").features
        got = features.cpu().numpy().astype(np.float32)
        seen[fold.index] = round(float(np.median(got - frozen.astype(np.float32))))  # fp16
        return real(cfg_, features, labels, subjects, fold, *a, **kw)

    monkeypatch.setattr(train_mod, "fold_run", spy)
    return seen


def test_train_head_uses_fold_k_cache_for_fold_k(tmp_path, monkeypatch):
    from pipeline.registry import stage
    from tests.head.conftest import tiny_params, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n_videos=18, n_subjects=6, dim=8)
    # subject_norm off: it subtracts each person's mean, and with it the per-fold offset that marks the cache read
    cfg = load_config(tiny_params(tmp_path, epochs=1, fold_workers=1, center="none", features="finetuned",
                                  subject_norm=False))
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="run `pipeline run finetune --dataset synth` first"):
        stage("train-head").run(cfg, dataset="synth")
    _per_fold_caches(cfg, "synth")
    seen = _fold_offsets(cfg, "synth", monkeypatch)
    metrics = stage("train-head").run(cfg, dataset="synth")
    assert seen == {0: 0, 1: 100, 2: 200} and metrics["n_folds"] == 3
    # evaluate feeds each fold's head its own fold's cache: the checkpoints reproduce predictions.csv exactly
    # (on the frozen cache, 100 and 200 away from what folds 1 and 2 trained on, they would not).
    summary = stage("evaluate").run(cfg, dataset="synth")
    assert summary["checkpoint_agreement"] == 100.0, summary
    import stages.evaluate as ev
    from pipeline.layout import layout_for

    heads = ev._load_heads(cfg, "synth")
    data = ev.evaluation_data(cfg, "synth", heads[0].config)
    frozen = load_cache(cfg.dataset_dir("synth") / "features").features.astype(np.float32)
    for h in heads:
        got = ev._head_features(h, data, "synth", layout_for(cfg, "synth")).numpy().astype(np.float32)
        assert round(float(np.median(got - frozen))) == 100 * h.fold
    # A per-fold cache made for other folds is refused: its backbone may have seen this fold's test videos.
    _per_fold_caches(cfg, "synth", wrong_fold=1)
    with pytest.raises(PipelineError, match="made for other folds than train-head's fold 1"):
        stage("train-head").run(cfg, dataset="synth")  # the new caches' fingerprint makes train-head stale


def test_frozen_default_never_reads_per_fold_caches(tmp_path, monkeypatch):
    import pipeline.head.finetuned as finetuned_mod
    from pipeline.registry import stage
    from tests.head.conftest import tiny_params, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n_videos=18, n_subjects=6, dim=8)
    cfg = load_config(tiny_params(tmp_path, epochs=1, fold_workers=1))
    assert cfg.train_head.features == "frozen"
    monkeypatch.setattr(finetuned_mod, "load_fold_features", lambda *a, **k: pytest.fail("read per-fold caches"))
    assert stage("train-head").run(cfg, dataset="synth")["n_folds"] == 3


@pytest.mark.slow
def test_real_crops_through_extract_and_finetune(face_dataset, tmp_path):
    """The real clips: detect -> resample (the shared fixture) -> extract with crops -> finetune, on the CPU.
    With extract.motion=flow: the per-fold caches keep the frozen cache's motion columns, and predict adds them."""
    from pipeline.registry import stage

    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    over = ["extract.keep_crops=true", "extract.backbone=retinaface_mnet", "extract.crop_size=64", "extract.motion=flow",
            "train_head.folds=2", *(f"finetune.{k}={v}" for k, v in {**FT, "epochs": 2, "frames_per_video": 4}.items())]
    cfg = load_config(face_dataset["params"], data_root=str(tmp_path), overrides=over)
    stage("extract").run(cfg, dataset="faces")
    summary = stage("finetune").run(cfg, dataset="faces")
    frozen = load_cache(tmp_path / "faces" / "features")
    assert summary["folds"] == 2 and summary["bad_crop"] == 0
    for k in (0, 1):
        ck = torch.load(tmp_path / "faces" / "checkpoints" / f"backbone-fold-{k}.pt", weights_only=True)
        assert ck["epochs"] == 2 and len(ck["trained_ids"]) == summary["per_fold"][str(k)]["n_train"]
        cache = load_cache(tmp_path / "faces" / "features" / "finetuned" / f"fold-{k}")
        assert cache.video_id == frozen.video_id and cache.features.shape == frozen.features.shape
        assert cache.attrs["preprocess"]["crop_size"] == 64
        np.testing.assert_array_equal(cache.features[..., 384:], frozen.features[..., 384:])  # motion: as extract made it
    # The starting backbone on the decoded crops gives extract's frozen features back (JPEG q95 apart):
    # finetune feeds the network exactly as extract does.
    from pipeline.finetune.crops import load_crops
    from pipeline.finetune.model import features_of, trainable_extractor

    crops, _ = load_crops(tmp_path / "faces" / "features", "faces", "finetune")
    ext = trainable_extractor(cfg.extract)
    start = features_of(ext, crops.crops[0], 32).numpy()
    ref = frozen.features[frozen.video_id.index(crops.video_id[0])].astype(np.float32)[:, :ext.dim]
    assert np.corrcoef(start.ravel(), ref.ravel())[0, 1] > 0.99
    assert np.abs(start - ref).mean() < 0.05 * np.abs(ref).mean()
    # `pipeline cache info` reports the crops' size on disk and the per-fold caches.
    from pipeline.commands.verify import info

    stats = info(cfg, "faces")
    jpeg_bytes = 0
    for shard in (tmp_path / "faces" / "features").glob("shard-*.h5"):
        with h5py.File(shard, "r") as f:
            jpeg_bytes += sum(len(c) for row in f["crops"][:] for c in row)
    assert stats["crops"]["videos"] == len(frozen.video_id)
    assert jpeg_bytes <= stats["crops"]["bytes"] <= min(stats["bytes"], 1.5 * jpeg_bytes + 2**20)
    assert stats["finetuned"]["folds"] == ["fold-0", "fold-1"] and stats["finetuned"]["bytes"] > 0
    assert stats["crops_pack"]["bytes"] == jpeg_bytes  # the pack: the same JPEG bytes, end to end
    # Heads on the per-fold caches, then `pipeline predict` on a real video: head k is fed the features of
    # fold k's adapted backbone (checked by its sha256), and a replaced backbone is refused.
    from pipeline.commands.predict import Predictor
    from pipeline.errors import PipelineError
    from pipeline.registry import stage

    cfg_ft = load_config(face_dataset["params"], data_root=str(tmp_path), results_root=str(tmp_path / "results"),
                         overrides=[*over, "train_head.features=finetuned", "train_head.epochs=2",
                                    "train_head.fold_workers=1"])
    stage("train-head").run(cfg_ft, dataset="faces")
    model = tmp_path / "results" / "faces"
    pred = Predictor(model, device="cpu")
    assert pred.finetuned and len(pred.backbones) == 2
    assert any(not torch.equal(pred.backbones[0][k], pred.backbones[1][k]) for k in pred.backbones[0])
    video = next(p for p in sorted(face_dataset["root"].rglob("*.mp4")))
    out = pred.predict(video, tmp_path / "clip.png")
    assert out.label in pred.class_names and abs(sum(out.probabilities.values()) - 1) < 1e-3
    ckpt = tmp_path / "faces" / "checkpoints" / "backbone-fold-1.pt"
    ckpt.write_bytes(ckpt.read_bytes() + b"changed")
    with pytest.raises(PipelineError, match="is not the backbone fold 1's head was trained with"):
        Predictor(model, device="cpu")


def test_stage_refuses_to_cache_a_fold_whose_backbone_saw_its_test_videos(tmp_path, monkeypatch):
    """Folds that overlap (a bug the guard exists for) stop the stage before fold 0's cache is written."""
    import stages.finetune as stage
    from pipeline.finetune.train import LeakageError
    from pipeline.head.train import Fold
    from pipeline.runner import run_stage

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2)
    real = stage.protocol_folds

    def overlapping(*a, **kw):
        folds, protocol = real(*a, **kw)
        return [Fold(0, np.arange(4), folds[0].test)], protocol

    monkeypatch.setattr(stage, "protocol_folds", overlapping)
    with pytest.raises(LeakageError, match="fold 0: the backbone checkpoint trained on 2 of the fold's own test"):
        run_stage("finetune", _cfg(tmp_path, epochs=1, head_epochs=1), "ft")
    assert not (tmp_path / "data" / "ft" / "features" / "finetuned" / "fold-0").exists()


def test_end_to_end_mode_trains_backbone_and_head_on_sampled_clips_never_on_test_videos(tmp_path):
    """`mode: end_to_end`: backbone + CEFLNet head on the paper's 7 x 5 sampled crops per video (105 cached
    frames); every batch is the fold's training videos only; the per-fold caches follow as in frame mode."""
    made = write_crops_dataset(tmp_path, n_frames=105)
    cfg = _cfg(tmp_path, mode="end_to_end", epochs=3, head_epochs=1, batch_size=70, lr=1e-3)
    summary, seen = run_recording_batches(cfg)
    assert summary["mode"] == "end_to_end" and summary["folds"] == 2
    assert all(len(b) == 70 for b in seen)  # 2 videos x 35 crops (6 training videos: 3 batches per epoch)
    assert len(seen) == 2 * 3 * 3
    folder = made["folder"]
    ck0 = torch.load(folder / "checkpoints" / "backbone-fold-0.pt", weights_only=True)
    assert ck0["mode"] == "end_to_end" and not set(ck0["trained_ids"]) & made["marked"]
    assert any(k.startswith("head.") for k in ck0["classifier"])  # the CEFLNet head trained with it
    # fold 0's 18 batches come first: none holds fold 0's marked test videos; fold 1 trains on exactly those.
    assert not any(_marker_in(b).any() for b in seen[:9]) and all(_marker_in(b).all() for b in seen[9:])
    for k, fold in summary["per_fold"].items():
        assert fold["final_loss"] < fold["first_loss"], (k, fold)  # measured 1.103 -> 1.074, 1.116 -> 1.075
        cache = load_cache(folder / "features" / "finetuned" / f"fold-{k}")
        assert cache.features.shape == (12, 105, 384) and np.isfinite(cache.features).all()


def test_end_to_end_on_too_few_cached_frames_is_a_clear_message(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.registry import stage

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2)  # 6 frames per video
    with pytest.raises(PipelineError, match="end_to_end draws the paper's 7 clips"):
        stage("finetune").run(_cfg(tmp_path, mode="end_to_end"), dataset="ft")


def test_ablate_uses_fold_k_cache_for_fold_k(tmp_path, monkeypatch):
    from pipeline.registry import stage
    from tests.head.conftest import tiny_params, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", n_videos=18, n_subjects=6, dim=8)
    # subject_norm off: it subtracts each person's mean, and with it the per-fold offset that marks the cache read
    cfg = load_config(tiny_params(tmp_path, epochs=1, fold_workers=1, center="none", features="finetuned",
                                  subject_norm=False))
    _per_fold_caches(cfg, "synth")
    seen = _fold_offsets(cfg, "synth", monkeypatch)
    out = stage("ablate").run(cfg, dataset="synth", kinds=("meanpool",))
    assert seen == {0: 0, 1: 100, 2: 200} and out["features"] == "finetuned"


# --------------------------------------------------------------------------- pack integrity (issue 29)


def _packed(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """A written pack: (params.yaml, pack .bin, offsets)."""
    from pipeline.finetune.crops import load_crops, pack_dir

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2)
    _cfg(tmp_path, epochs=1, head_epochs=1)
    features = tmp_path / "data" / "ft" / "features"
    load_crops(features, "ft", "finetune")
    data = next(pack_dir(features).glob("pack-*.bin"))
    with np.load(data.with_suffix(".npz")) as z:
        offsets = z["offsets"]
    return tmp_path / "params.yaml", data, offsets


def _flip_still_decoding(data: Path, lo: int, hi: int) -> None:
    """Flip one bit in the entropy-coded part of one crop such that it still decodes, to other pixels."""
    from pipeline.finetune.crops import decode_jpeg

    raw = bytearray(data.read_bytes())
    clean = decode_jpeg([torch.frombuffer(bytes(raw[lo:hi]), dtype=torch.uint8)])[0]
    for pos in range(hi - 8, (lo + hi) // 2, -1):
        crop = bytearray(raw[lo:hi])
        crop[pos - lo] ^= 0x10
        try:
            img = decode_jpeg([torch.frombuffer(bytes(crop), dtype=torch.uint8)])[0]
        except RuntimeError:
            continue
        if not torch.equal(img, clean):
            raw[lo:hi] = crop
            data.write_bytes(bytes(raw))
            return
    pytest.fail("no single-bit flip of this crop still decodes")


@pytest.mark.parametrize("damage", ["still_decodes", "undecodable"])
def test_a_damaged_pack_is_caught_with_the_repair_command(tmp_path, damage):
    from click.testing import CliRunner

    from pipeline.cli import main

    params, data, offsets = _packed(tmp_path)
    lo, hi = int(offsets[1, 2]), int(offsets[1, 3])
    if damage == "still_decodes":
        _flip_still_decoding(data, lo, hi)
    else:
        raw = bytearray(data.read_bytes())
        raw[lo:hi] = bytes(hi - lo)  # zeros: not a JPEG at all
        data.write_bytes(bytes(raw))
    fix = f"rm {data.parent}/pack-*"
    verify = CliRunner().invoke(main, ["cache", "verify", "--params", str(params), "--dataset", "ft"])
    assert verify.exit_code == 1 and fix in verify.output and "pipeline run finetune --dataset ft" in verify.output, \
        verify.output
    run = CliRunner().invoke(main, ["run", "finetune", "--no-deps", "--force", "--params", str(params), "--dataset", "ft"])
    assert run.exit_code == 1, run.output
    assert fix in run.output and "fails its checksum" in run.output and "Traceback" not in run.output
    for p in data.parent.glob("pack-*"):  # following the advice repairs it
        p.unlink()
    res = CliRunner().invoke(main, ["run", "finetune", "--no-deps", "--params", str(params), "--dataset", "ft"])
    assert res.exit_code == 0, res.output
    assert "pack" not in CliRunner().invoke(main, ["cache", "verify", "--params", str(params), "--dataset", "ft"]).output


def test_a_temporary_pack_left_by_a_kill_is_removed_by_the_next_run(tmp_path):
    from pipeline.finetune.crops import load_crops

    _, data, _ = _packed(tmp_path)
    stale = data.parent / f".{data.name}.abc123.tmp"  # what atomic_path leaves when the packer is killed
    stale.write_bytes(b"half a pack")
    for p in data.parent.glob("pack-*"):  # killed before the pack was complete: none under its final name
        p.unlink()
    load_crops(tmp_path / "data" / "ft" / "features", "ft", "finetune")
    assert not stale.exists() and data.exists()


def test_a_damaged_fold_cache_names_its_folder_and_the_advice_repairs_it(tmp_path):
    """Issue 29: the advice for `features/finetuned/fold-k/` is finetune's (extract would redo the
    frozen cache and leave the fold's as it is); running it repairs the fold's cache."""
    import re

    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.errors import PipelineError
    from pipeline.registry import stage
    from tests.cache.test_integrity import damage_row

    write_crops_dataset(tmp_path, n_subjects=2, per_subject=2)
    stage("finetune").run(_cfg(tmp_path, epochs=1, head_epochs=1), dataset="ft")
    fold = tmp_path / "data" / "ft" / "features" / "finetuned" / "fold-0"
    checkpoint = tmp_path / "data" / "ft" / "checkpoints" / "backbone-fold-0.pt"
    trained = checkpoint.read_bytes()
    damage_row(fold / "shard-00000.h5", 0, 0x01)
    with pytest.raises(PipelineError) as err:
        load_cache(fold)  # what train-head and evaluate read with `features: finetuned`
    msg = str(err.value)
    assert "features/finetuned/fold-0/shard-00000.h5" in msg and "pipeline run extract" not in msg, msg
    command = re.search(r"`(pipeline run finetune --dataset ft)`", msg).group(1).split()[1:]
    res = CliRunner().invoke(main, [*command, "--no-deps", "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 0, res.output
    assert len(load_cache(fold)) == 4 and checkpoint.read_bytes() == trained  # rewritten from the checkpoint
