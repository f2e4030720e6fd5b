"""Do adapted backbones help the head on people it has never seen? Frozen vs fine-tuned features on the
demo, same folds and seeds, each `finetune.mode` asked for (issue 12).

    python bench/bench_finetune_accuracy.py                          # 4 people, both modes
    python bench/bench_finetune_accuracy.py --identities 12 --folds 6 --modes end_to_end

Runs through the `pipeline` CLI, as a user would: the demo dataset (transient flavour) with N people,
`extract --keep-crops` with the detector body, then `train-head` on the frozen cache (the baseline, in
the same run) and, per mode, `finetune` followed by `train-head --set train_head.features=finetuned`.
Every other parameter is the params.yaml default. Writes a markdown table (+ .json) with WAR and the
linear probe (mean ± std over the leave-people-out folds, last epoch) and the wall time of each step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> float:
    cmd = [sys.executable, "-m", "pipeline.cli", *argv]
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "work-finetune-accuracy")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "finetune_accuracy.md")
    ap.add_argument("--identities", type=int, default=4)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--modes", default="frame,end_to_end")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="more --set for finetune")
    args = ap.parse_args()
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data_root"], p["results_root"] = str(args.work / "data"), str(args.work / "results")
    p["datasets"] = {"ftbench": {"adapter": "demo", "root": str(args.work / "data" / "ftbench" / "raw"),
                                 "options": {"seed": 0, "videos_per_class_per_identity": 3,
                                             "identities": args.identities}}}
    p["dataset"], p["repro"] = "ftbench", ["ftbench"]
    args.work.mkdir(parents=True, exist_ok=True)
    params = args.work / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    common = ["--params", str(params), "--dataset", "ftbench", "--set", "extract.backbone=retinaface_mnet",
              "--set", "extract.keep_crops=true", "--set", f"train_head.folds={args.folds}"]
    t0 = time.time()
    rows = [{"features": "extract (with crops)", "seconds": run("run", "extract", *common)}]

    def head(name: str, *sets: str) -> dict:
        out = args.work / "results" / name
        sec = run("run", "train-head", *common, "--no-deps", "--results-root", str(out), *sets)
        m = json.loads((out / "ftbench" / "metrics.json").read_text())
        return {"war": m["war"], "war_std": m["war_std"], "uar": m["uar"], "uar_std": m["uar_std"],
                "probe": m["linear_probe"]["war"], "probe_std": m["linear_probe"]["war_std"],
                "per_fold": [m["per_fold"][k]["war"] for k in sorted(m["per_fold"], key=int)],
                "n_videos": m["n_videos"], "head_seconds": round(sec, 1)}

    rows.append({"features": "frozen", **head("frozen")})
    for mode in args.modes.split(","):
        sets = ["--set", f"finetune.mode={mode}", *[x for e in args.extra for x in ("--set", e)]]
        sec = run("run", "finetune", *common, "--no-deps", "--force", *sets)
        rows.append({"features": f"finetuned, mode {mode}", "finetune_seconds": round(sec, 1),
                     **head(f"finetuned-{mode}", "--set", "train_head.features=finetuned", *sets)})
        print(json.dumps(rows[-1]), flush=True)
    write(args, rows, time.time() - t0)


def write(args, rows: list[dict], seconds: float) -> None:
    fmt = lambda m, s: f"{m:.1f} ± {s:.1f}"  # noqa: E731
    lines = ["# Frozen vs fine-tuned backbone features on the demo (issue 12)", "",
             f"`python bench/bench_finetune_accuracy.py {' '.join(sys.argv[1:])}`".replace("  ", " "), "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; {seconds / 60:.0f} min in all.", "",
             f"Demo (transient flavour), {args.identities} people, {args.folds} leave-people-out folds, detector body "
             "(retinaface_mnet), every other parameter the params.yaml default (finetune and train_head sections). "
             "Last-epoch WAR, mean ± std over folds; chance 16.7 %.", "",
             "| features | WAR % | UAR % | linear probe WAR % | per-fold WAR % | finetune s | train-head s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r['features']} | {fmt(r['war'], r['war_std'])} | {fmt(r['uar'], r['uar_std'])} | "
                     f"{fmt(r['probe'], r['probe_std'])} | {' / '.join(f'{w:.1f}' for w in r['per_fold'])} | "
                     f"{r.get('finetune_seconds', '—')} | {r['head_seconds']} |")
    lines += ["", f"extract with crops: {rows[0]['seconds']:.0f} s."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
