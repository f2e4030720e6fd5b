"""The aligned crops extract keeps (`extract.keep_crops`), as fine-tuning reads them: a pack written once,
then either decoded whole into memory or decoded batch by batch.

Layout, measured (bench/results/finetune_cpu.md, docs/finetune.md): a 224 px crop is ~14.5 KB as the
shards' JPEG (q95) against 147 KB decoded, and batched `decode_jpeg` runs ~3,300 crops/s on 2 CPU cores,
12x what a CPU fold trains at 224 px. So data that does not fit in memory as uint8 stays JPEG and is
decoded per batch; data that fits is decoded once.

- The **pack** (`<data_root>/D/crops/pack-<key>.bin` + `.npz`): every cached video's JPEG bytes end to end
  in one flat file, with per-frame offsets, written once from the shards and reused by every fold and
  every later run until a shard changes (the key is the shards' names, sizes, mtimes and signatures).
  Packing decodes each video once to find crops that do not decode (`bad_crop`, recorded in the pack, so
  they are reported again without re-decoding). The `.bin` is memory-mapped: the OS keeps as much of it
  cached as memory allows, and a batch reads only the bytes of the frames it draws.
- **Resident** (`ResidentCrops`): the whole set decoded into one uint8 tensor `(N, T, 3, S, S)` when it is
  at most `finetune.crops_memory_gb`; a batch is one gather.
- **Streamed** (`StreamedCrops`): otherwise; a batch's frames are decoded in one batched `decode_jpeg` call,
  on the training device (nvJPEG on a GPU). On the CPU the batches equal the resident ones bit for bit
  (tested), so the choice changes speed and memory, never the adapted weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from cache.store import list_shards, read_strings
from pipeline.errors import PipelineError, VideoError
from pipeline.io import Failure, atomic_path, clean_stale_temporaries, file_lock
from pipeline.layout import DatasetLayout

try:  # batched, libjpeg-turbo on the CPU, nvJPEG on a GPU
    from torchvision.io import decode_jpeg as _torchvision_decode
except ImportError:  # torchvision 0.29 deprecated its image codecs (TorchCodec replaces them): keep working
    _torchvision_decode = None

log = logging.getLogger(__name__)
PACK_FORMAT = 2
"""2: a CRC-32 per crop in the index (issue 29); a pack of another format is rebuilt."""


def decode_jpeg(data: list[torch.Tensor], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """(3, H, W) uint8 RGB per JPEG byte tensor; RuntimeError when one does not decode."""
    if _torchvision_decode is not None:
        return _torchvision_decode(data, device=device)
    import cv2

    out = []
    for d in data:
        im = cv2.imdecode(d.numpy(), cv2.IMREAD_COLOR)
        if im is None:
            raise RuntimeError("cv2.imdecode: not a decodable JPEG")
        out.append(torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))))
    return out


class PackDamaged(PipelineError):
    """The pack's bytes are not those it was written with (a disk or a copy changed them)."""


def pack_damage_message(data: Path, what: str) -> str:
    dataset = data.parent.parent.name  # <data_root>/<dataset>/crops/pack-<key>.bin
    return (f"{data}: {what}; the crops pack changed after it was written. Delete it and rerun: "
            f"rm {data.parent}/pack-*  and then  pipeline run finetune --dataset {dataset}  "
            f"(the pack is rebuilt from the shards)")


def crop_crc32(jpeg: np.ndarray | bytes) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(np.asarray(jpeg, dtype=np.uint8))).cast("B"))


class NoCropsError(PipelineError):
    """The feature cache was extracted without `extract.keep_crops`: there is nothing to fine-tune on."""


def no_crops_message(dataset: str, shard: Path) -> str:
    return (f"{shard} holds no crops: dataset {dataset!r} was extracted with extract.keep_crops false, and "
            f"fine-tuning reads the aligned crops. Add them with\n"
            f"  pipeline run extract --dataset {dataset} --set extract.keep_crops=true\n"
            "(re-extracts every video once, keeping its crops; a cache that holds crops keeps them in every later "
            f"extract). To make it this dataset's setting, put under datasets.{dataset} in params.yaml:\n"
            "  overrides:\n    extract:\n      keep_crops: true\n")


def decode_video(jpegs: list[np.ndarray]) -> torch.Tensor:
    """(T, 3, S, S) uint8 from T JPEG byte arrays in one batched call; VideoError `bad_crop` names the frame."""
    data = [torch.from_numpy(np.asarray(j, dtype=np.uint8)) for j in jpegs]
    try:
        images = decode_jpeg(data)
    except RuntimeError:
        # The batched call says only that one image failed: find which, on this rare path alone.
        for t, d in enumerate(data):
            try:
                decode_jpeg([d])
            except RuntimeError as err:
                raise VideoError("bad_crop", f"crop {t} does not decode as JPEG ({str(err).splitlines()[0]})") from err
        raise
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1 or next(iter(shapes))[0] != 3:
        raise VideoError("bad_crop", f"crops of different shapes or not RGB: {sorted(shapes)}")
    return torch.stack(images)


# ---------------------------------------------------------------- the pack


@dataclass
class CropPack:
    """Every cleanly decoding video's JPEG crops, end to end in one memory-mapped byte array."""

    video_id: list[str]
    offsets: np.ndarray  # (N, T + 1) int64: frame t of video i is data[offsets[i, t]:offsets[i, t + 1]]
    data: np.ndarray  # (bytes,) uint8, memory-mapped read-only
    frame_shape: tuple[int, int, int]  # (3, S, S)
    failures: list[Failure]
    path: Path
    crc32: np.ndarray  # (N, T) uint32: zlib.crc32 of each crop's JPEG bytes, as read from the shards

    @property
    def n_frames(self) -> int:
        return self.offsets.shape[1] - 1

    @property
    def decoded_bytes(self) -> int:
        return len(self.video_id) * self.n_frames * int(np.prod(self.frame_shape))

    def jpegs(self, rows: np.ndarray, frames: np.ndarray) -> list[torch.Tensor]:
        """The JPEG bytes of frame `frames[j]` of video `rows[j]`, each copied out of the map and checked
        against its CRC-32 (~1 GB/s: a few percent of decoding them); PackDamaged when one differs."""
        lo, hi = self.offsets[rows, frames], self.offsets[rows, frames + 1]
        out = [np.array(self.data[a:b]) for a, b in zip(lo.tolist(), hi.tolist())]
        for j, b in enumerate(out):
            if crop_crc32(b) != int(self.crc32[rows[j], frames[j]]):
                raise PackDamaged(pack_damage_message(
                    self.path, f"crop {int(frames[j])} of video {self.video_id[int(rows[j])]!r} fails its checksum"))
        return [torch.from_numpy(b) for b in out]

    def damaged(self) -> list[str]:
        """Videos with a crop whose bytes fail their checksum (a whole pass over the pack)."""
        bad = []
        for i in range(len(self.video_id)):
            o = self.offsets[i]
            if any(crop_crc32(self.data[o[t]:o[t + 1]]) != int(self.crc32[i, t]) for t in range(self.n_frames)):
                bad.append(self.video_id[i])
        return bad


def pack_key(shards: list[Path], dataset: str) -> str:
    """Changes whenever a shard is rewritten, added or removed; NoCropsError for a shard without crops
    (every shard checked before a single crop is read)."""
    h = hashlib.sha256(f"pack-format-{PACK_FORMAT}".encode())
    for s in shards:
        st = s.stat()
        with h5py.File(s, "r") as f:
            if "crops" not in f:
                raise NoCropsError(no_crops_message(dataset, s))
            sig = str(f.attrs.get("signature", ""))
        h.update(f"{s.name}:{st.st_size}:{st.st_mtime_ns}:{sig}".encode())
    return h.hexdigest()[:16]


def pack_dir(features_dir: Path) -> Path:
    """The crops pack of the dataset whose frozen cache is `features_dir` (`DatasetLayout.crops_pack`)."""
    return DatasetLayout(features_dir.parent).crops_pack


def open_pack(features_dir: Path, dataset: str, stage: str, *,
              keep_bytes: float = 0) -> tuple[CropPack, torch.Tensor | None]:
    """The current pack, written first when missing or stale (older packs removed once it is complete).

    When it is written and its decoded videos fit `keep_bytes`, those are returned too (N, T, 3, S, S):
    packing decodes every video anyway, so a resident load need not decode them a second time."""
    shards = list_shards(features_dir)
    if not shards:
        raise PipelineError(f"no feature shards under {features_dir}: run "
                            f"`pipeline run extract --dataset {dataset} --set extract.keep_crops=true` first")
    folder = pack_dir(features_dir)
    key = pack_key(shards, dataset)
    meta, data = folder / f"pack-{key}.npz", folder / f"pack-{key}.bin"
    decoded = None
    if not (meta.exists() and data.exists()):
        # One writer at a time (two finetunes of one dataset): under the lock no temporary is in use,
        # so any left is a killed run's, and a pack another run finished meanwhile is taken as it is.
        with file_lock(folder / "pack"):
            clean_stale_temporaries(folder, ".pack-*.tmp")
            if not (meta.exists() and data.exists()):
                decoded = _write_pack(shards, meta, data, keep_bytes)
                for old in folder.glob("pack-*"):
                    if old.name not in (meta.name, data.name) and not old.name.startswith("."):
                        old.unlink()
    return _read_pack(meta, data, stage), decoded


def _write_pack(shards: list[Path], meta: Path, data: Path, keep_bytes: float) -> torch.Tensor | None:
    """The .bin first, then the .npz: the .npz's presence is what marks a pack complete. Returns the
    decoded good videos when all the shards' videos would fit `keep_bytes`, else None."""
    from tqdm import tqdm

    kept: torch.Tensor | None = None
    ids: list[str] = []
    offsets: list[np.ndarray] = []
    crcs: list[list[int]] = []
    bad: list[tuple[str, str, str]] = []
    frame_shape: tuple[int, ...] | None = None
    total = 0
    n_videos = 0
    for s in shards:
        with h5py.File(s, "r") as f:
            n_videos += f["video_id"].shape[0]
    with atomic_path(data) as tmp, open(tmp, "wb") as out, \
            tqdm(total=n_videos, desc="pack crops", unit="video", leave=False) as bar:
        for s in shards:
            with h5py.File(s, "r") as f:
                for i, vid in enumerate(read_strings(f["video_id"])):
                    bar.update(1)
                    jpegs = list(f["crops"][i])
                    try:
                        video = decode_video(jpegs)
                        if frame_shape is None:
                            frame_shape = tuple(video.shape[1:])
                            if n_videos * video.numel() <= keep_bytes:
                                kept = torch.empty((n_videos, *video.shape), dtype=torch.uint8)
                        if tuple(video.shape[1:]) != frame_shape or (offsets and len(jpegs) != offsets[0].size - 1):
                            # a video cropped at another size or length: a stale shard mixed in
                            raise VideoError("bad_crop", f"crops {tuple(video.shape)}, the cache's are "
                                                         f"({offsets[0].size - 1 if offsets else '?'}, {frame_shape})")
                    except VideoError as err:
                        bad.append((vid, err.kind, err.message))
                        continue
                    sizes = np.array([len(j) for j in jpegs], dtype=np.int64)
                    offsets.append(total + np.concatenate([[0], np.cumsum(sizes)]))
                    total += int(sizes.sum())
                    crcs.append([crop_crc32(j) for j in jpegs])
                    for j in jpegs:
                        out.write(np.asarray(j, dtype=np.uint8).tobytes())
                    if kept is not None:
                        kept[len(ids)] = video
                    ids.append(vid)
        out.flush()
        # Read back before the index marks the pack complete: a write the disk got wrong is caught here.
        written = np.memmap(tmp, dtype=np.uint8, mode="r") if total else np.zeros(0, np.uint8)
        for o, c, vid in zip(offsets, crcs, ids):
            if [crop_crc32(written[o[t]:o[t + 1]]) for t in range(len(c))] != c:
                raise PackDamaged(pack_damage_message(data, f"video {vid!r} reads back other bytes than were written"))
        del written
    with atomic_path(meta) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, video_id=np.array(ids, dtype=object).astype(str),
                     offsets=np.stack(offsets) if offsets else np.zeros((0, 1), np.int64),
                     frame_shape=np.array(frame_shape or (3, 0, 0)),
                     crc32=np.array(crcs, dtype=np.uint32).reshape(len(ids), -1 if ids else 1),
                     failures=np.array(json.dumps(bad)), format=np.array(PACK_FORMAT))
    log.info("packed the crops of %d videos (%.1f MiB) into %s", len(ids), total / 2**20, data)
    return None if kept is None else kept[:len(ids)]


def _read_pack(meta: Path, data: Path, stage: str) -> CropPack:
    try:
        with np.load(meta, allow_pickle=False) as z:
            ids, offsets, crc = [str(v) for v in z["video_id"]], z["offsets"], z["crc32"]
            frame_shape = tuple(int(x) for x in z["frame_shape"])
            bad = json.loads(str(z["failures"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # np.load's errors for a damaged .npz
        raise PackDamaged(pack_damage_message(data, f"its index {meta.name} does not read ({err})")) from err
    size = data.stat().st_size
    mm = np.memmap(data, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    if len(offsets) and int(offsets[-1, -1]) != size:
        raise PackDamaged(pack_damage_message(data, f"{size} bytes, its index says {int(offsets[-1, -1])}"))
    return CropPack(ids, offsets, mm, frame_shape, [Failure(v, stage, k, m) for v, k, m in bad], data, crc)


# ---------------------------------------------------------------- what training reads


class CropSource:
    """Crops of a set of videos, local rows `0..len-1` (a `subset` renumbers); uint8 RGB `(3, S, S)` frames."""

    rows: torch.Tensor  # local row -> row of the underlying set

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, T, 3, S, S), as the resident tensor would be."""
        raise NotImplementedError

    def gather(self, videos: torch.Tensor, frames: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """uint8 `(*videos.shape, 3, S, S)`: frame `frames[...]` of local video `videos[...]` (same shapes)."""
        raise NotImplementedError

    def video(self, row: int) -> torch.Tensor:
        """(T, 3, S, S) uint8, every frame of local video `row`."""
        t = self.shape[1]
        return self.gather(torch.full((t,), row, dtype=torch.long), torch.arange(t))

    def subset(self, rows: torch.Tensor) -> "CropSource":
        raise NotImplementedError


class ResidentCrops(CropSource):
    def __init__(self, crops: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        assert crops.ndim == 5 and crops.shape[2] == 3, f"crops must be (N, T, 3, S, S), got {tuple(crops.shape)}"
        self.crops = crops
        self.rows = torch.arange(len(crops)) if rows is None else rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.crops.shape[1:])

    def gather(self, videos, frames, device=None):
        out = self.crops[self.rows[videos], frames]
        return out if device is None else out.to(device)

    def video(self, row: int) -> torch.Tensor:
        return self.crops[int(self.rows[row])]

    def subset(self, rows):
        return ResidentCrops(self.crops, self.rows[rows])


class StreamedCrops(CropSource):
    def __init__(self, pack: CropPack, rows: torch.Tensor | None = None) -> None:
        self.pack = pack
        self.rows = torch.arange(len(pack.video_id)) if rows is None else rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), self.pack.n_frames, *self.pack.frame_shape)

    def gather(self, videos, frames, device=None):
        rows = self.rows[videos.reshape(-1)].numpy()
        data = self.pack.jpegs(rows, frames.reshape(-1).numpy())
        dev = device if device is not None and device.type == "cuda" else "cpu"
        images = _decode_pack(self.pack, data, dev)  # one batched call; nvJPEG when training on a GPU
        out = torch.stack(images).view(*videos.shape, *self.pack.frame_shape)
        return out if device is None else out.to(device)

    def subset(self, rows):
        return StreamedCrops(self.pack, self.rows[rows])


def _decode_pack(pack: CropPack, data: list[torch.Tensor], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Packed crops decoded; their bytes passed the checksum, so one that fails to decode means the
    pack no longer matches its index: the same advice, never decode_jpeg's raw RuntimeError."""
    try:
        return decode_jpeg(data, device=device)
    except RuntimeError as err:
        raise PackDamaged(pack_damage_message(pack.path, f"a crop does not decode ({str(err).splitlines()[0]})")) from err


def as_source(crops: torch.Tensor | CropSource) -> CropSource:
    return crops if isinstance(crops, CropSource) else ResidentCrops(crops)


@dataclass
class CropSet:
    """The crops fine-tuning reads, one local row per cleanly decoding video."""

    video_id: list[str]
    source: CropSource
    row: dict[str, int]
    """video id -> row of `source`."""
    pack: CropPack

    def __len__(self) -> int:
        return len(self.video_id)

    @property
    def resident(self) -> bool:
        return isinstance(self.source, ResidentCrops)

    def describe(self) -> str:
        gib = self.pack.decoded_bytes / 2**30
        where = "decoded in memory" if self.resident else "decoded per batch from the pack"
        return (f"{len(self)} videos' crops {where} ({gib:.2f} GiB as uint8, "
                f"pack {self.pack.data.size / 2**20:.1f} MiB: {self.pack.path})")

    @property
    def crops(self) -> torch.Tensor:
        """The resident tensor (N, T, 3, S, S); streamed sets have none."""
        if not self.resident:
            raise AttributeError("streamed crops are not held in memory; use .source")
        return self.source.crops


def load_crops(features_dir: Path, dataset: str, stage: str, *,
               memory_gb: float = 8.0) -> tuple[CropSet, list[Failure]]:
    """Every cached video's crops (the pack's order: shards in name order) and the videos that failed.

    Resident when the decoded set is at most `memory_gb` GiB (decoded once, into one tensor allocated at
    its final size), else streamed from the pack."""
    pack, crops = open_pack(features_dir, dataset, stage, keep_bytes=memory_gb * 2**30)
    n = len(pack.video_id)
    if pack.decoded_bytes <= memory_gb * 2**30:
        if crops is None:  # a pack written earlier (or its upper bound did not fit): decode it once here
            crops = torch.empty((n, pack.n_frames, *pack.frame_shape), dtype=torch.uint8)
            t = torch.arange(pack.n_frames).numpy()
            for i in range(n):
                crops[i] = torch.stack(_decode_pack(pack, pack.jpegs(np.full(pack.n_frames, i), t)))
        source: CropSource = ResidentCrops(crops)
    else:
        source = StreamedCrops(pack)
    cs = CropSet(pack.video_id, source, {v: i for i, v in enumerate(pack.video_id)}, pack)
    return cs, list(pack.failures)
