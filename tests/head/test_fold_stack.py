"""All folds as one batched model (pipeline/head/stack.py): each fold equals the same fold trained alone."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import TrainHeadConfig
from pipeline.head.baselines import build_head
from pipeline.head.sampling import ClipSampler
from pipeline.head.stack import CEFLNetStack, ModuleStack, stack_heads
from pipeline.head.train import cross_validate, lr_at, make_folds


def small_cache(n: int = 40, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 105, dim), dtype=np.float32).astype(np.float16)
    return feats, rng.integers(0, 3, n), np.array([f"S{i % 8}" for i in range(n)])


def train_alone(cfg: TrainHeadConfig, feats: np.ndarray, labels: np.ndarray, subjects: np.ndarray, fold, kind: str):
    """The reference: one fold, the plain module and torch.optim.Adam, with the seeds cross_validate gives it
    (head from seed + fold, data order from seed + 1000 + fold, dropout from the global RNG after the build)."""
    x, y = torch.from_numpy(feats), torch.from_numpy(labels.astype(np.int64))
    torch.manual_seed(cfg.seed + fold.index)
    model = build_head(cfg, x.shape[-1], 3, kind)
    model.input.fit(x[torch.as_tensor(fold.train)], subjects[fold.train], labels[fold.train])
    gen = torch.Generator().manual_seed(cfg.seed + 1000 + fold.index)
    sampler = ClipSampler.from_config(cfg, x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    train_rows, losses = torch.as_tensor(fold.train), []
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        order = train_rows[torch.randperm(len(train_rows), generator=gen)]
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            rows = order[s:s + cfg.batch_size]
            index = sampler.train_indices(len(rows), gen)
            loss = F.cross_entropy(model(x[rows[:, None, None], index].float()).logits, y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(order))
    return model.state_dict(), losses


def fitted_heads(cfg: TrainHeadConfig, n: int = 2) -> list:
    """n heads of 32-d input and 3 classes, each from its own seed, input fitted on random videos, in eval mode."""
    models = []
    for f in range(n):
        torch.manual_seed(f)
        m = build_head(cfg, 32, 3)
        m.input.fit(torch.randn(10, 105, 32), np.array(list("aabbccddee")), np.arange(10) % 3)
        models.append(m.eval())
    return models


@pytest.mark.parametrize("kind, dropout, kernel, standardize", [("ceflnet", 0.0, 1, False), ("ceflnet", 0.4, 3, False),
                                                             ("meanpool", 0.4, 1, False), ("ceflnet", 0.4, 1, True)])
def test_a_fold_in_the_batch_equals_the_fold_trained_alone(kind, dropout, kernel, standardize):
    """Folds of unequal size (30, 25, 25 training videos at batch 4: 8, 7, 7 steps, short last batches), the
    two-stream input with its fitted buffers: weights and loss history equal training alone. With dropout on
    too: each fold's masks come from its own stream, the one it draws from alone."""
    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    assert len({len(f.train) for f in folds}) > 1 and any(len(f.train) % 4 for f in folds)
    cfg = TrainHeadConfig(folds=3, epochs=3, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu", lr=1e-3,
                          dropout=dropout, raw_dropout=dropout, clip_kernel=kernel, center="two_stream_first",
                          identity_rank=4, standardize=standardize, fusion="none")  # the head's own weights
    batched = cross_validate(cfg, feats, labels, folds, 3, kind=kind, subjects=subjects)
    for fold, res in zip(folds, batched):
        state, losses = train_alone(cfg, feats, labels, subjects, fold, kind)
        assert res.fold == fold.index and state.keys() == res.state_dict.keys()
        for k, v in state.items():
            torch.testing.assert_close(res.state_dict[k], v, rtol=1e-4, atol=1e-6, msg=k)
        np.testing.assert_allclose([e.train_loss for e in res.history], losses, rtol=1e-5)


def test_bf16_autocast_trains_the_batched_head_with_raw_dropout():
    """`train_head.precision: bf16` on the CPU: the kept-rows product (`KeptRows`) takes a bf16 gradient and returns
    W's in fp32 (it raised a dtype error before), and training stays close to fp32's."""
    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    cfg = TrainHeadConfig(folds=3, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu", lr=1e-3,
                          raw_dropout=0.5, center="two_stream_first", identity_rank=4, fusion="none")
    fp32 = cross_validate(cfg, feats, labels, folds, 3, subjects=subjects)
    bf16 = cross_validate(dataclasses.replace(cfg, precision="bf16"), feats, labels, folds, 3, subjects=subjects)
    for a, b in zip(fp32, bf16):
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in b.state_dict.values())
        np.testing.assert_allclose([e.train_loss for e in b.history], [e.train_loss for e in a.history], rtol=0.05)


def test_fold_groups_give_the_same_folds():
    """`fold_batch` only bounds memory: folds trained two at a time equal folds trained all together."""
    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    cfg = TrainHeadConfig(folds=3, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu",
                          center="none")
    together = cross_validate(cfg, feats, labels, folds, 3, subjects=subjects)
    pairs = cross_validate(dataclasses.replace(cfg, fold_batch=2), feats, labels, folds, 3, subjects=subjects)
    for a, b in zip(together, pairs):
        assert a.fold == b.fold
        np.testing.assert_allclose(a.probs, b.probs, rtol=1e-5, atol=1e-7)
        assert [e.test_war for e in a.history] == [e.test_war for e in b.history]


def test_dropout_masks_differ_across_folds():
    """Three folds holding the same weights and the same batch: with dropout on, their outputs differ (each
    fold draws its own masks); in eval mode they are equal."""
    cfg = TrainHeadConfig(hidden=16, dropout=0.4, raw_dropout=0.5, center="two_stream", identity_rank=2)
    torch.manual_seed(0)
    model = build_head(cfg, 32, 3)
    models, states = [], []
    for f in range(3):
        m = build_head(cfg, 32, 3)
        m.load_state_dict(model.state_dict())
        models.append(m)
        torch.manual_seed(f)  # each fold's stream, as cross_validate seeds it per fold
        states.append(torch.get_rng_state())
    stack = stack_heads(models, states)
    assert isinstance(stack, CEFLNetStack)
    x = torch.randn(1, 6, 7, 5, 32).expand(3, -1, -1, -1, -1)
    logits = stack(x, [6, 6, 6]).logits
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[1], logits[2])
    stack.eval()
    with torch.no_grad():
        logits = stack(x).logits
    torch.testing.assert_close(logits[0], logits[1])
    torch.testing.assert_close(logits[1], logits[2])


def test_batched_outputs_equal_the_module_in_eval():
    """Every HeadOutput field of the batched paper head equals the module's (the clip maps, the rich clip, the
    embedding, not only the logits), and other heads go through ModuleStack."""
    cfg = TrainHeadConfig(hidden=16, clip_kernel=3, center="two_stream_first", identity_rank=2, standardize=True)
    models = fitted_heads(cfg)
    stack = stack_heads(models, [torch.get_rng_state()] * 2)
    stack.eval()
    x = torch.randn(2, 5, 7, 5, 32)
    with torch.no_grad():
        out = stack(x)
        for f, m in enumerate(models):
            ref = m(x[f])
            for field in ("logits", "clip_scores", "embedding"):
                torch.testing.assert_close(getattr(out, field)[f], getattr(ref, field), rtol=1e-5, atol=1e-6)
            assert torch.equal(out.rich_clip[f], ref.rich_clip)
    assert isinstance(stack_heads([build_head(cfg, 32, 3, "lstm")], [torch.get_rng_state()]), ModuleStack)


@pytest.mark.parametrize("people", ["a" * 10, "aabbccddee"])
def test_the_stack_skips_identity_directions_no_fold_has(people):
    """With one person (or `subject_norm`'s coinciding means) no fold has an identity direction and the stack
    skips the projection; with 5 people rank 8 keeps 4 rows. Either way the module's numbers, and the
    checkpoint keeps the module's full buffer."""
    cfg = TrainHeadConfig(hidden=16, center="two_stream_first", identity_rank=8)
    models = []
    for f in range(2):
        torch.manual_seed(f)
        m = build_head(cfg, 32, 3)
        m.input.fit(torch.randn(10, 105, 32), np.array(list(people)), np.arange(10) % 3)
        models.append(m.eval())
    stack = stack_heads(models, [torch.get_rng_state()] * 2)
    stack.eval()
    assert stack.basis.shape[1] == (0 if people == "a" * 10 else 4)
    assert stack.state_dict(0)["input.basis"].shape == (8, 16)
    x = torch.randn(2, 5, 7, 5, 32)
    with torch.no_grad():
        out = stack(x)
        for f, m in enumerate(models):
            torch.testing.assert_close(out.logits[f], m(x[f]).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("center, standardize", [("two_stream_first", True), ("two_stream", False), ("none", True)])
def test_the_cpu_shortcuts_give_the_plain_products_numbers(center, standardize):
    """A training step with the CPU's shortcuts (W_QK's raw rows on the kept videos only, W_V's gradient in one
    product) gives the outputs and gradients of the plain products a GPU runs, here on the CPU: with raw dropout
    keeping some videos of a fold, none of another, and a fold's padding rows."""
    cfg = TrainHeadConfig(hidden=16, clip_kernel=3, center=center, identity_rank=0, standardize=standardize,
                          raw_dropout=0.5, dropout=0.4)
    models = fitted_heads(cfg, 3)
    x = torch.randn(3, 6, 7, 5, 32)
    results = []
    for shortcuts in (True, False):
        stack = stack_heads(models, [torch.get_rng_state()] * 3)
        stack.train()
        stack.shortcuts = shortcuts
        for f, g in enumerate(stack.generators):
            g.manual_seed(f)
        out = stack(x, [6, 4, 2])
        out.logits.sum().backward()
        results.append((out.logits.detach(), {k: v.grad for k, v in stack.params.items()}))
    (fast, fast_grad), (plain, plain_grad) = results
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    assert fast_grad.keys() == plain_grad.keys()
    for k in fast_grad:
        torch.testing.assert_close(fast_grad[k], plain_grad[k], rtol=1e-5, atol=1e-6, msg=k)


def test_predict_leaves_an_eval_model_in_eval_mode():
    from pipeline.head.train import predict

    cfg = TrainHeadConfig(hidden=8, center="none")
    model = build_head(cfg, 16, 3).eval()
    out = predict(model, torch.randn(4, 105, 16), torch.arange(4), ClipSampler.from_config(cfg, 105))
    assert out["probs"].shape == (4, 3) and not model.training


def test_averaged_windows_are_the_mean_of_each_windows_probabilities():
    """`test_windows: all`: probs are the mean of the one-window probabilities over every training window start;
    clip scores and embedding stay the test_offset window's, and the rich clip is that window's best clip for
    the averaged class. The batched head (two folds) and the module give the same."""
    from pipeline.head.train import predict, predict_folds

    cfg = TrainHeadConfig(hidden=16, center="two_stream_first", identity_rank=2, test_windows="all")
    models = fitted_heads(cfg)
    feats, rows = torch.randn(6, 105, 32), torch.arange(6)
    every = ClipSampler.from_config(cfg, 105)
    one = {o: ClipSampler.from_config(dataclasses.replace(cfg, test_windows="fixed", test_offset=o), 105)
           for o in range(30)}
    for model, out in zip(models, predict_folds(stack_heads(models, [torch.get_rng_state()] * 2), [feats, feats],
                                                [rows, rows], every)):
        alone = predict(model, feats, rows, every)
        per_window = {o: predict(model, feats, rows, s) for o, s in one.items()}
        mean = torch.stack([p["probs"] for p in per_window.values()]).mean(0)
        for got in (out, alone):
            torch.testing.assert_close(got["probs"], mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got["clip_scores"], per_window[15]["clip_scores"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got["embedding"], per_window[15]["embedding"], rtol=1e-5, atol=1e-6)
            best = per_window[15]["clip_scores"][torch.arange(6), mean.argmax(1)].argmax(-1)
            assert torch.equal(got["rich_clip"], best)
        assert not torch.allclose(mean, per_window[15]["probs"])  # the windows do differ: the test can fail


@pytest.mark.parametrize("windows", ["fixed", "all"])
def test_train_head_scores_the_trained_head_on_its_test_windows(windows):
    """A fold's final probs are its last-epoch head's prediction on the configured windows, fused with its probe
    (what evaluate and predict recompute from the checkpoint); its history scores the head alone on the
    test_offset window every epoch."""
    from pipeline.head.report import war_uar
    from pipeline.head.train import checkpoint_module, predict

    feats, labels, subjects = small_cache()
    folds = make_folds(labels, subjects, k=3, seed=0)
    cfg = TrainHeadConfig(folds=3, epochs=2, batch_size=4, hidden=16, threads=1, fold_workers=1, device="cpu",
                          center="two_stream_first", identity_rank=2, test_windows=windows)
    fixed = ClipSampler.from_config(dataclasses.replace(cfg, test_windows="fixed"), 105)
    for fold, res in zip(folds, cross_validate(cfg, feats, labels, folds, 3, subjects=subjects)):
        model = checkpoint_module(cfg, feats.shape[-1], 3)
        model.load_state_dict(res.state_dict)
        model.eval()
        x, rows = torch.from_numpy(feats), torch.as_tensor(fold.test)
        torch.testing.assert_close(torch.from_numpy(res.probs),
                                   predict(model, x, rows, ClipSampler.from_config(cfg, 105))["probs"])
        del model.fusion  # the history is the head's own
        one = predict(model, x, rows, fixed)["probs"].argmax(1).numpy()
        assert res.history[-1].test_war == pytest.approx(war_uar(labels[fold.test], one)[0])
