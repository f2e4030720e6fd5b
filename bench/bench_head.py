"""Head training throughput: the resident-cache loop (pipeline.head.train) vs a naive per-sample
DataLoader loop, on a synthetic cache of a real dataset's size, measured in the same run.

    python bench/bench_head.py                       # MMI size: 205 videos, 30 subjects, 10 folds x 120 epochs, CPU
    python bench/bench_head.py --threads 1 --precision bf16
    python bench/bench_head.py --dfew --batch-size 256   # DFEW size (12,059 videos, 5 folds) on the GPU
    python bench/bench_head.py --demo                # the demo's shapes (params.yaml): videos, people, head input
    python bench/bench_head.py --against HEAD~1      # one batched step, this tree's stack.py against a revision's
    python bench/bench_head.py --profile-protocol 6  # where train-head's loop goes (cProfile), the demo's shapes

The full protocol is timed for our loop; the naive loop runs `--naive-epochs` epochs of one fold and
is extrapolated to the same protocol (it is the baseline, not the product). On the CPU the run also
measures a **floor**: the work no implementation of this head at this batch size can skip, i.e. the
Q/K projection matmul of eq. 1 (forward + weight gradient over B x 35 frame tokens) and the Adam
update of every parameter, timed in the same parallel processes as training and multiplied by the
protocol's step count. Writes the table to bench/results/head_cpu.md (head_gpu.md on CUDA).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import TrainHeadConfig
from pipeline.head.baselines import build_head
from pipeline.head.train import autocast, cross_validate, fold_processes, make_folds, set_threads
from pipeline.precision import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import machine_info, machine_lines  # noqa: E402
from _tables import publish  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def demo_shape() -> tuple[int, int, int, int, int]:
    """(videos, people, folds, classes, head input width) of what `pipeline demo` trains, from params.yaml: its
    generated set's size, train-head's folds, and the extractor's cached width (backbone plus `extract.motion`'s
    columns) doubled by a two-stream `train_head.center`."""
    from pipeline.commands.demo import demo_size
    from pipeline.config import load_config
    from pipeline.demo.generate import CLASSES
    from pipeline.features import build_extractor
    from pipeline.head.inputs import input_dim

    cfg = load_config(Path(__file__).resolve().parent.parent / "params.yaml", dataset="demo")
    videos, people = demo_size(cfg)
    width = input_dim(cfg.train_head.center, build_extractor(cfg.extract).out_dim)
    return videos, people, cfg.train_head.folds, len(CLASSES), width


SIZES = {"dfew": (12059, 1000, 5, 7, 512), "mmi": (205, 30, 10, 6, 512)}
"""(videos, people, folds, classes, head input width) of the fixed protocols the bench can time; the demo's
come from params.yaml (`demo_shape`)."""


def synthetic(n: int, n_subjects: int, dim: int, n_classes: int, cfg: TrainHeadConfig, seed: int = 0):
    """(features, labels, subjects) of n random videos: the head input of width `dim` that train-head builds from
    random backbone features (`head_input`: the config's `subject_norm` and two-stream layout, as on real data)."""
    from pipeline.head.inputs import head_input, is_two_stream

    rng = np.random.default_rng(seed)
    width = dim // 2 if is_two_stream(cfg.center) else dim
    backbone = rng.standard_normal((n, 105, width), dtype=np.float32).astype(np.float16)
    labels, subjects = rng.integers(0, n_classes, n), [f"S{i % n_subjects:03d}" for i in range(n)]
    return head_input(backbone, cfg, subjects, n_classes), labels, subjects


class NaiveDataset(torch.utils.data.Dataset):
    """What the authors' NewDataset does per sample, on cached features: Python sampling, one video at a time."""

    def __init__(self, feats: np.ndarray, labels: np.ndarray, rows: np.ndarray):
        self.feats, self.labels, self.rows = feats, labels, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        v = self.feats[self.rows[i]]
        first = random.randint(0, 29)
        clips = []
        for c in range(7):
            picks = sorted(random.sample(range(15), 5))
            clips.append(np.stack([v[first + 10 * c + p] for p in picks]).astype(np.float32))
        return torch.from_numpy(np.stack(clips)), int(self.labels[self.rows[i]])


def naive_epoch_seconds(cfg: TrainHeadConfig, feats, labels, rows, n_classes: int, epochs: int, device) -> float:
    model = build_head(cfg, feats.shape[-1], n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(NaiveDataset(feats, labels, rows), batch_size=cfg.batch_size, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)).logits, y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def _floor_worker(cfg: TrainHeadConfig, dim: int, n_classes: int, steps: int) -> tuple[float, float]:
    """Seconds per step, in one single-threaded process, of (a) eq. 1's Q/K projection forward and
    weight gradient at this batch size, (b) a fused Adam update of all head parameters."""
    torch.set_num_threads(1)
    model = build_head(cfg, dim, n_classes)
    tokens = cfg.batch_size * cfg.n_clips * cfg.frames_per_clip
    x = torch.randn(tokens, dim)
    w = model.head.cfe.sal.qk.weight.detach().clone().requires_grad_()  # paper head: (2H, D)
    go = torch.randn(tokens, w.shape[0])
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    for _ in range(10):  # warm-up: allocator, MKL buffers
        F.linear(x, w).backward(go)
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        w.grad = None
        F.linear(x, w).backward(go)
    gemm = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return gemm, (time.perf_counter() - start) / steps


def stacked_step(cfg: TrainHeadConfig, dim: int, n_classes: int, k: int, compiled: bool = False, stack_module=None):
    """(step, models, x, y): one optimizer step of k folds as one batched model (pipeline/head/stack.py, or
    `stack_module`: another version of it) on random inputs of the config's shapes, as train-head runs it;
    `compiled`: its forward and backward through torch.compile (inductor's generated C++ kernels; the per-fold
    dropout generators break the graph)."""
    if stack_module is None:
        import pipeline.head.stack as stack_module
    FoldAdam, stack_heads = stack_module.FoldAdam, stack_module.stack_heads

    models = []
    for f in range(k):
        torch.manual_seed(f)
        models.append(build_head(cfg, dim, n_classes))
    frames = cfg.n_clips * cfg.frames_per_clip
    feats, *_ = synthetic(k * cfg.batch_size, k * cfg.batch_size, dim, n_classes, cfg)  # one video a person
    x = torch.from_numpy(feats[:, :frames]).float().view(k, cfg.batch_size, cfg.n_clips, cfg.frames_per_clip, dim)
    stack = stack_heads(models, [torch.get_rng_state()] * k)
    adam = FoldAdam(stack, cfg.lr, cfg.weight_decay)
    y = torch.randint(0, n_classes, (k, cfg.batch_size))

    def loss() -> torch.Tensor:
        logits = stack(x, [cfg.batch_size] * k).logits
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").div(cfg.batch_size)

    forward = torch.compile(loss) if compiled else loss

    def step() -> None:
        stack.zero_grad()
        forward().backward()
        adam.step(range(k))

    return step, models, x, y


def profile_step(dim: int, k: int, steps: int = 10, precision: str = "fp32") -> str:
    """torch.profiler's table of `steps` batched steps (one thread), by operator and input shape: where a step
    goes. The defaults are the demo's: two_stream_first on the detector body (2 x 384), 5 folds a process;
    `precision` bf16: under autocast, as train-head runs it (the weights' casts show as copy_ rows)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = TrainHeadConfig(center="two_stream_first")
    torch.set_num_threads(1)
    plain, *_ = stacked_step(cfg, dim, 6, k)

    def step() -> None:
        with autocast(torch.device("cpu"), precision):
            plain()
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    ms = 1e3 * (time.perf_counter() - start) / steps
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15,
                                                                max_name_column_width=24, max_shapes_column_width=60)
    gemm, adam = _floor_worker(cfg, dim, 6, 50)  # one fold's Q/K GEMMs (fwd + weight grad) and Adam, these shapes
    return (f"{steps} steps of {k} folds, input {dim}, {precision}, one thread: {ms:.1f} ms a step (not profiled); floor for "
            f"{k} folds: Q/K GEMMs {1e3 * k * gemm:.1f} ms + Adam {1e3 * k * adam:.1f} ms\n{table}")


def profile_protocol(epochs: int, k: int = 5) -> str:
    """cProfile's table (by cumulative time) of train-head's loop on the demo's shapes: k of its 10 folds for
    `epochs` epochs in this one process and thread, as one fold process trains them: the step against the per-epoch
    test pass, the final all-windows pass and the input fitting."""
    import cProfile
    import io
    import pstats

    torch.set_num_threads(1)
    n, n_subj, folds, n_cls, dim = demo_shape()
    cfg = TrainHeadConfig(folds=folds, epochs=epochs, threads=1, fold_workers=1, device="cpu")
    feats, labels, subjects = synthetic(n, n_subj, dim, n_cls, cfg)
    share = make_folds(labels, subjects, k=folds, seed=0)[:k]
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(cross_validate, cfg, feats, labels, share, n_cls, device=torch.device("cpu"), desc="profiled",
                 subjects=subjects)
    total = time.perf_counter() - start
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(r"pipeline[/\\]head", 25)
    return f"{k} folds x {epochs} epochs, input {dim}, one thread: {total:.1f} s\n{out.getvalue()}"


def against(rev: str, dim: int, k: int, steps: int = 40, rounds: int = 4) -> str:
    """Milliseconds per batched step (one thread, k folds, the demo's head) of this tree's pipeline/head/stack.py
    and of revision `rev`'s, timed in turns in one process so that both see the same machine load."""
    import importlib.util
    import subprocess
    import tempfile

    src = subprocess.run(["git", "show", f"{rev}:pipeline/head/stack.py"], cwd=Path(__file__).resolve().parent.parent,
                         check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack_then.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("stack_then", path)
        then = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(then)
    cfg = TrainHeadConfig(center="two_stream_first")
    torch.set_num_threads(1)
    runs = {rev: stacked_step(cfg, dim, 6, k, stack_module=then)[0], "this tree": stacked_step(cfg, dim, 6, k)[0]}
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for step in runs.values():
        for _ in range(5):  # warm-up
            step()
    for _ in range(rounds):
        for name, step in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            ms[name].append(1e3 * (time.perf_counter() - start) / steps)
    lines = [f"one batched step of {k} folds, input {dim}, one thread, {rounds} turns of {steps} steps each:", "",
             "| stack.py | ms per step, each turn | best |", "|---|---|---|"]
    lines += [f"| {name} | {' / '.join(f'{v:.1f}' for v in vals)} | {min(vals):.1f} |" for name, vals in ms.items()]
    return "\n".join(lines)


def step_probe(cfg: TrainHeadConfig, dim: int, n_classes: int, k: int, repeats: int,
               compiled: bool = False) -> tuple[dict[str, float], float | None]:
    """Milliseconds for one optimizer step of all k folds on one thread, data and test passes left out (best of
    `repeats`): the batched model (pipeline/head/stack.py), k steps of the module one fold after another, and
    the floor's work (k x the Q/K GEMMs + k fused Adam updates). Tells per-step overhead from compute.
    `compiled`: also the batched step through torch.compile, and the seconds its first call took."""
    torch.set_num_threads(1)
    batched, models, x, y = stacked_step(cfg, dim, n_classes, k)
    module = models[0]
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    w = module.head.cfe.sal.qk.weight.detach().clone().requires_grad_()
    tokens = x[0].reshape(-1, dim)
    go = torch.randn(len(tokens), w.shape[0])

    def one_by_one() -> None:
        for f in range(k):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(module(x[f]).logits, y[f]).backward()
            opt.step()

    def floor() -> None:
        for _ in range(k):
            w.grad = None
            F.linear(tokens, w).backward(go)
            opt.step()

    steps = {"batched": batched, "one_by_one": one_by_one, "floor": floor}
    compile_s = None
    if compiled:
        steps["batched, torch.compile"] = stacked_step(cfg, dim, n_classes, k, compiled=True)[0]
        start = time.perf_counter()
        steps["batched, torch.compile"]()
        compile_s = time.perf_counter() - start
    out = {}
    for name, fn in steps.items():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = 1e3 * min(times)
    return out, compile_s


def floor_seconds(cfg: TrainHeadConfig, dim: int, n_classes: int, total_steps: int, workers: int,
                  probe_steps: int) -> tuple[float, float]:
    """(Q/K GEMMs only, Q/K GEMMs + Adam) for the whole protocol, measured in `workers` parallel
    processes as training runs them and extrapolated from `probe_steps` steps each."""
    from joblib import Parallel, delayed

    per = Parallel(n_jobs=workers)(delayed(_floor_worker)(cfg, dim, n_classes, probe_steps) for _ in range(workers))
    gemm = sum(g for g, _ in per) / workers
    adam = sum(a for _, a in per) / workers
    return gemm * total_steps / workers, (gemm + adam) * total_steps / workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dfew", action="store_true", help="DFEW size (12,059 videos, 5 folds), GPU")
    ap.add_argument("--demo", action="store_true",
                    help="the demo's shapes, read from params.yaml: its videos, people and folds, and its head input "
                         "width (the extractor's cached width, doubled by a two-stream center)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--width", type=int, default=0,
                    help="head input width instead of the size's own (e.g. 1928: ResNet-18's 512 + flow_hog's 452, "
                         "doubled by two_stream_first, what the lab family trains MMI on)")
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--naive-epochs", type=int, default=2, help="at least 1: the table's baseline")
    ap.add_argument("--floor-steps", type=int, default=400, help="steps per process timed for the floor (0: skip)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--fold-workers", type=int, default=0, help="train_head.fold_workers (0: one process per core)")
    ap.add_argument("--fold-batch", type=int, default=0, help="train_head.fold_batch (0: all of a process's folds)")
    ap.add_argument("--probe-repeats", type=int, default=5, help="one-step probe repeats (0: skip)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="the one-step probe also times the step through torch.compile")
    ap.add_argument("--variant", default="paper", choices=["paper", "authors"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="results file (default bench/results/head_<cpu|gpu>.md)")
    ap.add_argument("--profile-step", type=int, default=0, metavar="DIM",
                    help="only print torch.profiler's table of one batched step at input width DIM (768: the demo)")
    ap.add_argument("--against", metavar="REV", default=None,
                    help="only time one batched step (input 1024) of this tree's pipeline/head/stack.py against git "
                         "revision REV's, in turns, and print it")
    ap.add_argument("--profile-protocol", type=int, default=0, metavar="EPOCHS",
                    help="only print cProfile's table of train-head's loop for EPOCHS epochs of 5 folds, the demo's shapes")
    args = ap.parse_args()
    if args.naive_epochs < 1:
        ap.error("--naive-epochs must be at least 1: the naive loop is the table's baseline")
    if args.profile_protocol:
        print(profile_protocol(args.profile_protocol))
        return
    if args.against:
        print(against(args.against, 1024, 5))
        return
    if args.profile_step:
        print(profile_step(args.profile_step, 5, precision=args.precision))
        return
    # (videos, people, folds, classes, head input width); the head input is what train-head feeds the head
    size = "dfew" if args.dfew else "demo" if args.demo else "mmi"
    n, n_subj, k, n_cls, dim = demo_shape() if size == "demo" else SIZES[size]
    dim = args.width or dim
    cfg = TrainHeadConfig(folds=k, epochs=args.epochs, batch_size=args.batch_size, threads=args.threads,
                          precision=args.precision, variant=args.variant, device=args.device,
                          fold_workers=args.fold_workers, fold_batch=args.fold_batch)
    device = resolve_device(cfg.device, "train_head.device")
    set_threads(cfg.threads, device)
    info = machine_info()
    feats, labels, subjects = synthetic(n, n_subj, dim, n_cls, cfg)
    folds = make_folds(labels, subjects, k=k, seed=0)
    total_steps = sum(math.ceil(len(f.train) / cfg.batch_size) for f in folds) * cfg.epochs
    workers = fold_processes(cfg, device, len(folds))
    start = time.perf_counter()
    cross_validate(cfg, feats, labels, folds, n_cls, device=device, desc="ours", subjects=subjects)
    ours = time.perf_counter() - start
    epoch_ours = ours / (k * cfg.epochs)
    naive = naive_epoch_seconds(dataclasses.replace(cfg), feats, labels, folds[0].train, n_cls, args.naive_epochs, device)
    naive_total = naive * k * cfg.epochs  # extrapolated: includes no per-epoch test pass, so it flatters naive
    rows = [("resident cache, batched gather (ours, incl. per-epoch test pass)", epoch_ours, ours),
            (f"naive: DataLoader + per-sample Python sampling ({args.naive_epochs} epochs, extrapolated)", naive,
             naive_total)]
    if device.type == "cpu" and args.floor_steps and args.variant == "paper":
        gemm, gemm_adam = floor_seconds(cfg, dim, n_cls, total_steps, workers, args.floor_steps)
        rows += [("floor: eq. 1 Q/K projection matmuls alone (fwd + weight grad), extrapolated", None, gemm),
                 ("floor: those matmuls + the fused Adam update, extrapolated", None, gemm_adam)]
    lines = [f"{size.upper() if size != 'demo' else 'Demo'}-size cache: {n} videos x 105 x {dim} fp16, {k} folds x {cfg.epochs} "
             f"epochs = {total_steps} optimizer steps of batch {cfg.batch_size}, {args.variant} head, "
             f"{args.precision}, device {device}, {workers} process(es) x {cfg.threads or 1} thread, each training its "
             f"share of the folds {f'{cfg.fold_batch} at a time' if cfg.fold_batch else 'as one batched model'}",
             "", "| loop | s / epoch (one fold) | full protocol, s | vs naive |", "|---|---|---|---|"]
    lines += [f"| {name} | {'' if per is None else f'{per:.3f}'} | {total:.1f} | {naive_total / total:.2f}x |"
              for name, per, total in rows]
    if device.type == "cpu" and args.probe_repeats and args.variant == "paper":
        probe, compile_s = step_probe(cfg, dim, n_cls, k, args.probe_repeats, args.compile)
        lines += ["", f"One optimizer step of all {k} folds on one thread (no data, no test pass; best of "
                  f"{args.probe_repeats}):", "", "| step | ms | vs floor |", "|---|---|---|"]
        lines += [f"| {name} | {ms:.0f} | {ms / probe['floor']:.2f}x |" for name, ms in probe.items()]
        if compile_s is not None:
            lines += ["", f"torch.compile's first step (compilation) took {compile_s:.1f} s."]
    lines += ["", "Machine:", "", *machine_lines(info)]
    text = "\n".join(lines)
    publish(args.out or RESULTS / f"head_{'gpu' if device.type == 'cuda' else 'cpu'}.md",
            f"# `python bench/bench_head.py {' '.join(sys.argv[1:])}`\n\n{text}\n")


if __name__ == "__main__":
    main()
