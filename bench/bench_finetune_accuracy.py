"""Do adapted backbones help the head on people it has never seen, and from how many training people on?
Frozen vs fine-tuned features on the demo, same folds and seeds, each `finetune.mode` asked for (issue 12).

    python bench/bench_finetune_accuracy.py                                   # 4 people, both modes
    python bench/bench_finetune_accuracy.py --identities 4,8,12 --episode sustained   # gain vs people
    python bench/bench_finetune_accuracy.py --modes end_to_end --crop-size 112 \
        --recipe "default:" --recipe "body 1e-4:body_lr=1e-4" --recipe "all blocks:train_layers=14"   # recipes

Runs through the `pipeline` CLI, as a user would: per number of people N, the demo dataset (the episode
flavour asked for) with the first N shipped people, `extract --keep-crops` with the detector body, then
`train-head` on the frozen cache (the baseline, in the same run) and, per mode, `finetune` followed by
`train-head --set train_head.features=finetuned`. Folds hold out `--test-people` people each (N / 2 folds
of 2 by default), so the number of training people per fold is N - 2: the gain is read against it.
Every other parameter is the params.yaml default. Writes a markdown table (+ .json) with WAR and the
linear probe (mean ± std over the leave-people-out folds, last epoch), the paired gain over frozen
(mean ± std over folds of fine-tuned minus frozen WAR, same fold) and the wall time of each step.
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

import numpy as np
import yaml

from _tables import publish  # beside this script

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> float:
    cmd = [sys.executable, "-m", "pipeline.cli", *argv]
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.time() - t


def one_size(args, n: int) -> list[dict]:
    """Every row for the demo with `n` people: extract, frozen, then each mode."""
    work = args.work / f"people-{n}"
    folds = args.folds or n // args.test_people
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data_root"], p["results_root"] = str(work / "data"), str(work / "results")
    p["datasets"] = {"ftbench": {"adapter": "demo", "root": str(work / "data" / "ftbench" / "raw"),
                                 "options": {"seed": 0, "videos_per_class_per_identity": 3,
                                             "identities": n, "episode": args.episode}}}
    p["dataset"], p["repro"] = "ftbench", ["ftbench"]
    work.mkdir(parents=True, exist_ok=True)
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    common = ["--params", str(params), "--dataset", "ftbench", "--set", "extract.backbone=retinaface_mnet",
              "--set", "extract.keep_crops=true", "--set", f"train_head.folds={folds}",
              *(["--set", f"extract.crop_size={args.crop_size}"] if args.crop_size else [])]
    base = {"people": n, "folds": folds, "train_people": n - n // folds}
    rows = [{**base, "features": "extract (with crops)", "seconds": run("run", "extract", *common)}]

    def head(name: str, *sets: str) -> dict:
        out = work / "results" / name
        sec = run("run", "train-head", *common, "--no-deps", "--results-root", str(out), *sets)
        m = json.loads((out / "ftbench" / "metrics.json").read_text())
        return {**base, "war": m["war"], "war_std": m["war_std"], "uar": m["uar"], "uar_std": m["uar_std"],
                "probe": m["linear_probe"]["war"], "probe_std": m["linear_probe"]["war_std"],
                "per_fold": [m["per_fold"][k]["war"] for k in sorted(m["per_fold"], key=int)],
                "n_videos": m["n_videos"], "head_seconds": round(sec, 1)}

    rows.append({"features": "frozen", **head("frozen")})
    frozen = np.asarray(rows[-1]["per_fold"])
    for mode in args.modes.split(","):
        for recipe, changes in recipes(args):
            sets = ["--set", f"finetune.mode={mode}", *[x for e in [*args.extra, *changes] for x in ("--set", e)]]
            sec = run("run", "finetune", *common, "--no-deps", "--force", *sets)
            name = f"finetuned, {mode}" + (f", {recipe}" if recipe else "")
            r = {"features": name, "finetune_seconds": round(sec, 1),
                 **head(f"finetuned-{mode}-{recipe or 'default'}", "--set", "train_head.features=finetuned", *sets)}
            gain = np.asarray(r["per_fold"]) - frozen
            r["gain"], r["gain_std"] = float(gain.mean()), float(gain.std())
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


def recipes(args) -> list[tuple[str, list[str]]]:
    """`--recipe "name:key=value,key=value"` (finetune keys), each run in every mode; none: the defaults."""
    out = []
    for spec in args.recipe:
        name, _, body = spec.partition(":")
        out.append((name, [f"finetune.{kv}" for kv in body.split(",") if kv]))
    return out or [("", [])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "work-finetune-accuracy")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "finetune_accuracy.md")
    ap.add_argument("--identities", default="4", help="numbers of people, comma-separated (the first N shipped)")
    ap.add_argument("--episode", default="transient", choices=("transient", "sustained"))
    ap.add_argument("--test-people", type=int, default=2, help="people held out per fold (folds = N / this)")
    ap.add_argument("--folds", type=int, default=None, help="fixed number of folds instead of --test-people")
    ap.add_argument("--modes", default="frame,end_to_end")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="more --set for finetune")
    ap.add_argument("--recipe", action="append", default=[],
                    help='"name:key=value,..." finetune settings compared in one run (repeatable)')
    ap.add_argument("--crop-size", type=int, default=None, help="extract.crop_size (default: the backbone's)")
    args = ap.parse_args()
    t0 = time.time()
    rows: list[dict] = []
    for n in (int(x) for x in args.identities.split(",")):
        rows += one_size(args, n)
        write(args, rows, time.time() - t0)  # after every size: a long study keeps what it has


def write(args, rows: list[dict], seconds: float) -> None:
    fmt = lambda m, s: f"{m:.1f} ± {s:.1f}"  # noqa: E731
    lines = ["# Frozen vs fine-tuned backbone features on the demo (issue 12)", "",
             f"`python bench/bench_finetune_accuracy.py {' '.join(sys.argv[1:])}`".replace("  ", " "), "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; {seconds / 60:.0f} min in all.", "",
             f"Demo ({args.episode} flavour), the first N shipped people, 18 videos each, leave-people-out folds "
             "(people per fold: N / folds), detector body (retinaface_mnet)"
             + (f" at {args.crop_size} px" if args.crop_size else "") + ", every other parameter the params.yaml "
             "default (finetune and train_head sections). Last-epoch WAR, mean ± std over folds; chance 16.7 %. "
             "Gain: fine-tuned minus frozen WAR on the same fold, mean ± std over folds.", "",
             "| people | train people / fold | features | WAR % | UAR % | gain over frozen, points | linear probe WAR % "
             "| per-fold WAR % | finetune s | train-head s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "war" not in r:
            continue
        gain = fmt(r["gain"], r["gain_std"]) if "gain" in r else "—"
        lines.append(f"| {r['people']} | {r['train_people']} | {r['features']} | {fmt(r['war'], r['war_std'])} | "
                     f"{fmt(r['uar'], r['uar_std'])} | {gain} | {fmt(r['probe'], r['probe_std'])} | "
                     f"{' / '.join(f'{w:.1f}' for w in r['per_fold'])} | {r.get('finetune_seconds', '—')} | "
                     f"{r['head_seconds']} |")
    lines += ["", "extract with crops: " + ", ".join(f"{r['people']} people {r['seconds']:.0f} s"
                                                      for r in rows if "seconds" in r) + "."]
    publish(args.out, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
