"""Peak memory (max RSS) of detect and extract for N and 10N copies of a short real clip.

Each stage runs in its own `python -m pipeline.cli run <stage> --no-deps` process; its peak RSS comes
from `os.wait4` (the child's own rusage, decode workers included). Flat memory means the 10N column
is close to the N column: videos are streamed, never held together.

    python bench/bench_memory.py                 # N=2, 24-frame clips, retinaface_mnet features
    python bench/bench_memory.py --n 4 --frames 48 --backbone resnet18
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the test helpers make the short clips
from tests.conftest import cut_clip  # noqa: E402

CLIP = ROOT / "tests" / "data" / "videos" / "single_face.mp4"


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """Run `cmd`; return (peak RSS in MiB, seconds). ru_maxrss is in KiB on Linux."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def run_case(base: Path, copies: int, frames: int, backbone: str) -> dict[str, tuple[float, float]]:
    root = base / f"videos{copies}" / "happiness"
    root.mkdir(parents=True)
    cut_clip(CLIP, root / "clip000.mp4", frames)
    for i in range(1, copies):
        shutil.copy(root / "clip000.mp4", root / f"clip{i:03d}.mp4")
    params = base / f"params{copies}.yaml"
    params.write_text(yaml.safe_dump({
        "dataset": "bench", "data_root": str(base / f"data{copies}"), "results_root": str(base / "results"),
        "datasets": {"bench": {"adapter": "folder", "root": str(root.parent)}},
        "detect": {"det_size": 480, "qc_samples": 0, "max_failure_fraction": 1.0},
        "extract": {"backbone": backbone, "weights": "random", "workers": 1, "shard_size": 256}}))
    out = {}
    for stage in ("manifest", "detect", "resample", "extract"):
        cmd = [sys.executable, "-m", "pipeline.cli", "run", stage, "--no-deps", "--params", str(params)]
        out[stage] = peak_rss_mib(cmd)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2, help="copies in the small case (the large one has 10x)")
    ap.add_argument("--frames", type=int, default=24, help="frames per clip")
    ap.add_argument("--backbone", default="retinaface_mnet", choices=["retinaface_mnet", "resnet18"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = run_case(Path(tmp), args.n, args.frames, args.backbone)
        large = run_case(Path(tmp), 10 * args.n, args.frames, args.backbone)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{args.frames}-frame 640x360 clip, backbone {args.backbone}")
    print(f"| stage | peak RSS N={args.n} (MiB) | peak RSS 10N={10 * args.n} (MiB) | ratio | time N (s) | time 10N (s) |")
    print("|---|---|---|---|---|---|")
    for stage in ("detect", "extract"):
        (ms, ts), (ml, tl) = small[stage], large[stage]
        print(f"| {stage} | {ms:.0f} | {ml:.0f} | {ml / ms:.2f} | {ts:.1f} | {tl:.1f} |")


if __name__ == "__main__":
    main()
