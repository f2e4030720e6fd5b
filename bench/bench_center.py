"""Which head input holds on data unlike the data it was chosen on? Every input option x every source
(rig x distractors x people) x both flavours, same leave-people-out folds, through the CLI, the user's
defaults otherwise (issues 11 and 31). A default is chosen by its *worst* column.

    python bench/bench_center.py                               # the demo's own world: tps rig, basic, 12 people
    python bench/bench_center.py --sources tps:rich:8,au:rich:8,tps:rich:12+1,au:rich:12+1 \\
        --options first_frames,video_median,two_stream_first
    python bench/bench_center.py --options two_stream_first --set train_head.raw_dropout=0

A source `RIG:DISTRACTORS:N[+B][:new][:weak]` is a demo dataset made with `rig` (tps|au), `distractors`
(basic|rich), the first N shipped people and B blended identities per pair of them (a family of two
parents and their blends shares one fold key). Folds: N/2 folds of 2 people without blends (so 8
people give 6 training people a fold), one fold per family with blends (12+1: 18 people in 6
families, 15 training people a fold). `:new` keeps the blends only (the demo's `parents: false`):
faces no default was chosen on, e.g. `tps:rich:8+2:new`, 8 blends in 4 families, 6 training people.
`:weak` draws each video's apex strength from the generator's `WEAK` range instead of `STRENGTH`
(pipeline/demo/generate.py): subtle expressions, e.g. `au:rich:8:weak`. Everything else about the
videos (people, episode timing, distractors) is the same draw as without it.

For each source and flavour it generates the videos, runs manifest → extract once through the
`pipeline` CLI (the detector's pretrained body, as the demo), then `pipeline run train-head` once per
option with `--set train_head.center=<option>`, and writes bench/results/center.md (+ .json): WAR,
UAR, strict clip localisation, the linear probe, folds within chance noise, mean ± std over the
folds (last epoch), and per option the minimum over every column.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import CENTERS  # noqa: E402
from pipeline.demo.generate import WEAK  # noqa: E402
from _tables import publish  # noqa: E402  (beside this script)


@dataclass(frozen=True)
class Source:
    rig: str
    distractors: str
    identities: int
    blends: int
    new: bool = False  # the blends only, not their parents
    weak: bool = False  # subtle expressions (the generator's WEAK apex strength)

    @classmethod
    def parse(cls, spec: str) -> "Source":
        try:
            rig, distractors, people, *flags = spec.split(":")
            n, _, b = people.partition("+")
            if flags not in ([], ["new"], ["weak"], ["new", "weak"]):
                raise ValueError("the optional parts are `new` then `weak`")
            if "new" in flags and not b:
                raise ValueError("`new` needs +B blends")
            return cls(rig, distractors, int(n), int(b or 0), "new" in flags, "weak" in flags)
        except ValueError as err:
            raise SystemExit(f"--sources: {spec!r} is not RIG:DISTRACTORS:N[+B][:new][:weak] ({err})") from None

    @property
    def name(self) -> str:
        return (f"{self.rig}-{self.distractors}-{self.identities}" + (f"+{self.blends}" if self.blends else "")
                + ("-new" if self.new else "") + ("-weak" if self.weak else ""))

    @property
    def folds(self) -> int:
        """2 people a fold without blends, one family a fold with them (a lone last person is a family of one,
        which `:new` leaves empty)."""
        return (self.identities + 1) // 2 if self.blends and not self.new else self.identities // 2

    @property
    def per_fold(self) -> int:
        """People in a fold: a pair, or a family (its parents unless `:new`, and its blends)."""
        return 2 if not self.blends else self.blends + (0 if self.new else 2)

    @property
    def training_people(self) -> int:
        return (self.folds - 1) * self.per_fold


def params_file(work: Path, args, sources: list[Source]) -> Path:
    """The repository's params.yaml plus one demo dataset per source and flavour, everything under `work`."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data_root"], p["results_root"] = str(work / "data"), str(work / "results")
    p["datasets"] = {}
    for s in sources:
        for f in args.flavours:
            name = f"bench-{s.name}-{f}".replace("+", "p")
            p["datasets"][name] = {"adapter": "demo", "root": str(work / "data" / name / "raw"), "options": {
                "seed": args.seed, "videos_per_class_per_identity": args.videos, "identities": s.identities,
                "episode": f, "rig": s.rig, "distractors": s.distractors, "blends": s.blends,
                **({"parents": False} if s.new else {}), **({"strength": list(WEAK)} if s.weak else {})}}
    p["dataset"] = next(iter(p["datasets"]))
    p["repro"] = list(p["datasets"])
    path = work / f"params-{'_'.join(s.name for s in sources)}.yaml"  # one per sweep part: parts run at once
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def pipeline(*argv: str) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", *argv]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def fmt(m: float, s: float) -> str:
    return f"{m:.1f} ± {s:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "work-center")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "center.md")
    ap.add_argument("--options", default=",".join(CENTERS))
    ap.add_argument("--sources", default="tps:basic:12", help="comma list of RIG:DISTRACTORS:N[+B][:new][:weak]")
    ap.add_argument("--flavours", default="transient,sustained")
    ap.add_argument("--videos", type=int, default=3, help="videos per class and person")
    ap.add_argument("--epochs", type=int, default=None, help="default: params.yaml's train_head.epochs")
    ap.add_argument("--batch-size", type=int, default=None, help="default: params.yaml's train_head.batch_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="more --set for train-head")
    ap.add_argument("--extract-set", action="append", default=[],
                    help="--set for extract (and train-head), e.g. extract.motion=flow; give each sweep its own --work")
    ap.add_argument("--extract-only", action="store_true", help="make the sources' feature caches and stop")
    ap.add_argument("--no-extract", action="store_true",
                    help="train on the feature caches an earlier run left in --work as they are (train-head runs "
                         "--no-deps): a head-only option then costs no re-extraction after a code change upstream")
    ap.add_argument("--preamble", type=Path, default=None,
                    help="with --tables: a markdown file put first in place of the title and command (the parts' commands)")
    ap.add_argument("--tables", default="", help="comma list of .json files of earlier runs: write their rows "
                    "as one table (sweeps run in parts) and stop")
    args = ap.parse_args()
    args.flavours = args.flavours.split(",")
    sources = [Source.parse(s) for s in args.sources.split(",")]
    # The user's defaults unless asked otherwise: the table must hold for what `pipeline run` trains.
    section = yaml.safe_load((REPO / "params.yaml").read_text())["train_head"]
    args.epochs = args.epochs or section["epochs"]
    args.batch_size = args.batch_size or section["batch_size"]
    if args.tables:
        # the .json files named are the record: the table is written without another copy of their rows
        write(args, [r for f in args.tables.split(",") for r in json.loads(Path(f).read_text())], 0.0, keep_rows=False)
        return
    options = args.options.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    params = params_file(args.work, args, sources)
    common = ["--params", str(params), "--set", "extract.backbone=retinaface_mnet",
              *[x for e in args.extract_set for x in ("--set", e)]]
    rows, t0 = [], time.time()
    for source in sources:
        for flavour in args.flavours:
            ds = f"bench-{source.name}-{flavour}".replace("+", "p")
            if not args.no_extract:
                pipeline("run", "extract", "--dataset", ds, *common)
            for option in options if not args.extract_only else ():
                results = args.work / "results" / option
                t = time.time()
                pipeline("run", "train-head", "--dataset", ds, *common, "--no-deps", "--results-root", str(results),
                         "--folds", str(source.folds), "--set", f"train_head.epochs={args.epochs}",
                         "--set", f"train_head.batch_size={args.batch_size}", "--set", f"train_head.center={option}",
                         *[x for e in args.extra for x in ("--set", e)])
                m = json.loads((results / ds / "metrics.json").read_text())
                loc, probe = m.get("clip_localization") or {}, m.get("linear_probe") or {}
                rows.append({"source": source.name, "training_people": source.training_people, "flavour": flavour,
                             "center": " ".join([option, *args.extract_set, *args.extra]), "war": m["war"], "war_std": m["war_std"],
                             "uar": m["uar"], "uar_std": m["uar_std"], "strict": loc.get("strict"),
                             "overlap": loc.get("overlap"), "random_strict": loc.get("random_strict"),
                             "probe_war": probe.get("war"), "probe_war_std": probe.get("war_std"),
                             "near_chance": m.get("n_folds_near_chance"), "n_folds": m["n_folds"],
                             "n_videos": m["n_videos"], "seconds": round(time.time() - t, 1),
                             "fold_war": [f["war"] for _, f in sorted(m["per_fold"].items(), key=lambda kv: int(kv[0]))]})
                print(json.dumps(rows[-1]), flush=True)
                write(args, rows, time.time() - t0)  # after every run: a stopped sweep keeps what it measured


def write(args, rows: list[dict], seconds: float, keep_rows: bool = True) -> None:
    columns = list(dict.fromkeys((r["source"], r["flavour"]) for r in rows))
    flavours = list(dict.fromkeys(f for _, f in columns))  # per-flavour minima: a family default (lab: transient)
    options = list(dict.fromkeys(r["center"] for r in rows))
    cell = {(r["center"], r["source"], r["flavour"]): r for r in rows}
    head = (args.preamble.read_text().rstrip("\n").split("\n") if getattr(args, "preamble", None) else
            ["# Head input options x sources x flavours (issues 11, 31)", "",
             f"`python bench/bench_center.py {' '.join(sys.argv[1:])}`".replace("  ", " "), "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; {seconds / 60:.0f} min in all."])
    lines = [*head, "",
             f"Detector-body features (retinaface_mnet), {args.videos} videos per class and person, leave-people-out "
             f"folds (StratifiedGroupKFold by subject, by family with blends, `train_head.seed`'s draw), videos of "
             f"generation seed {args.seed}, {args.epochs} epochs, batch "
             f"{args.batch_size}, every other setting the params.yaml default"
             + (f", plus `{' '.join(args.extra)}`" if args.extra else "") + ". Last-epoch WAR %, mean ± std over "
             "folds; chance 16.7 %. A source is RIG-DISTRACTORS-PEOPLE (`+B`: B blends per pair of people); the "
             "training people per fold in brackets. **min** is the worst column: a default must hold there; "
             "*min transient* / *min sustained* decide a family's (lab clips are transient, wild ones sustained).", "",
             "| center | " + " | ".join(f"{s} ({next(cell[(o, s, f)]['training_people'] for o in options if (o, s, f) in cell)}) {f}"
                                        for s, f in columns) + " | **min** | "
             + " | ".join(f"min {f}" for f in flavours) + " |",
             "|---|" + "---|" * (len(columns) + 1 + len(flavours))]

    def worst(o: str, keep) -> str:  # over every kept column, or "—" when one was not measured
        cols = [(s, f) for s, f in columns if keep(f)]
        return f"{min(cell[(o, s, f)]['war'] for s, f in cols):.1f}" if all((o, s, f) in cell for s, f in cols) else "—"

    for o in options:
        lines.append(f"| `{o}` | " + " | ".join(fmt(cell[(o, s, f)]["war"], cell[(o, s, f)]["war_std"])
                                                if (o, s, f) in cell else "—" for s, f in columns)
                     + f" | **{worst(o, lambda f: True)}** | "
                     + " | ".join(worst(o, lambda f, g=g: f == g) for g in flavours) + " |")
    lines += ["", "Details (strict: the emotion-rich clip's centre frame inside the apex span, a random clip's rate "
              "in brackets; probe: logistic regression on the same input, mean-pooled):", "",
              "| source | flavour | center | WAR % | UAR % | strict loc. % | probe WAR % | folds near chance | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        strict = f"{r['strict']:.1f} ({r['random_strict']:.1f})" if r["strict"] is not None else "—"
        probe = fmt(r["probe_war"], r["probe_war_std"]) if r["probe_war"] is not None else "—"
        lines.append(f"| {r['source']} | {r['flavour']} | `{r['center']}` | {fmt(r['war'], r['war_std'])} | "
                     f"{fmt(r['uar'], r['uar_std'])} | {strict} | {probe} | {r['near_chance']} of {r['n_folds']} | "
                     f"{r['seconds']:.0f} |")
    publish(args.out, "\n".join(lines) + "\n", rows if keep_rows else None)


if __name__ == "__main__":
    main()
