"""Every head: forward shapes, no NaN, every parameter gets a gradient (timm's model tests)."""
from __future__ import annotations

import pytest
import torch

from pipeline.config import TrainHeadConfig
from pipeline.head.baselines import KINDS, build_head
from pipeline.head.model import CEFLNet

HEADS = [("ceflnet", "paper"), ("ceflnet", "authors")] + [(k, "paper") for k in KINDS if k != "ceflnet"]


@pytest.mark.parametrize("kind,variant", HEADS)
@pytest.mark.parametrize("in_dim", [24, 32])  # 24 != hidden: the authors' variant needs its input projection
def test_forward_shapes_and_gradients(kind, variant, in_dim):
    torch.manual_seed(0)
    cfg = TrainHeadConfig(variant=variant, hidden=32)
    model = build_head(cfg, in_dim, 5, kind)
    x = torch.randn(3, 7, 5, in_dim)
    out = model(x)
    assert out.logits.shape == (3, 5)
    assert out.clip_scores.shape == (3, 5, 7)
    assert out.rich_clip.shape == (3,) and out.rich_clip.dtype == torch.int64
    assert out.embedding.shape[0] == 3
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.clip_scores).all()
    # clip scores are a distribution over clips (eq. 5), and P_e points at a maximum of the predicted class's map
    torch.testing.assert_close(out.clip_scores.sum(-1), torch.ones(3, 5))
    pred = out.logits.argmax(1)
    picked = out.clip_scores[torch.arange(3), pred, out.rich_clip]
    torch.testing.assert_close(picked, out.clip_scores[torch.arange(3), pred].amax(-1))
    out.logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{kind}/{variant}: no gradient for {missing}"


def test_wrong_input_shape_is_named():
    model = CEFLNet(16, 3, hidden=8)
    with pytest.raises(ValueError, match=r"\(B, n_clips, K, 16\)"):
        model(torch.randn(2, 7, 16))


def test_unknown_variant_and_kind():
    with pytest.raises(ValueError, match="variant"):
        CEFLNet(16, 3, variant="mine")
    with pytest.raises(ValueError, match="kind"):
        build_head(TrainHeadConfig(), 16, 3, "transformer")


def test_paper_head_matches_reference_size():
    """docs/reference.md §8: a CEFLNet-sized head has 1.07 M parameters at D = H = 512 (7 classes)."""
    n = sum(p.numel() for p in CEFLNet(512, 7).parameters())
    assert 1.05e6 < n < 1.08e6, n


def test_paper_sal_is_equation_1():
    """softmax(Q K^T / sqrt(d)) V, computed independently."""
    torch.manual_seed(1)
    model = CEFLNet(8, 3, hidden=4)
    f = torch.randn(2, 5, 8)
    w, wv = model.cfe.sal.qk.weight, model.cfe.sal.v.weight  # (2H, D), (H, D)
    q, k, v = f @ w[:4].T, f @ w[4:].T, f @ wv.T
    ref = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v
    torch.testing.assert_close(model.cfe.sal(f), ref)


def test_fast_cfe_equals_the_equations_in_order():
    """CFE.forward never builds eq. 1's attended frames; it must equal LRL(SAL(x)) computed as printed (eq. 1-4)."""
    torch.manual_seed(2)
    cfe = CEFLNet(24, 3, hidden=16).cfe
    x = torch.randn(3, 7, 5, 24, dtype=torch.float64)
    cfe = cfe.double()
    ref = cfe.lrl(cfe.sal(x.reshape(21, 5, 24))).reshape(3, 7, 16)
    torch.testing.assert_close(cfe(x), ref)


def test_fast_cfe_has_the_gradients_of_the_equations():
    """The reordering must not change training: every parameter's gradient equals the one of LRL(SAL(x))."""
    torch.manual_seed(3)
    cfe = CEFLNet(24, 3, hidden=16).cfe.double()
    x = torch.randn(3, 7, 5, 24, dtype=torch.float64)
    upstream = torch.randn(3, 7, 16, dtype=torch.float64)
    grads = []
    for forward in (lambda: cfe(x), lambda: cfe.lrl(cfe.sal(x.reshape(21, 5, 24))).reshape(3, 7, 16)):
        cfe.zero_grad(set_to_none=True)
        (forward() * upstream).sum().backward()
        grads.append({n: p.grad.clone() for n, p in cfe.named_parameters()})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 5  # W_QK, W_V, q0 (w, b), q1
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_clip_kernel_one_scores_each_clip_alone():
    """The paper's EIAN scores each clip with a fully-connected layer: kernel 1 sees only that clip, 3 its neighbours."""
    torch.manual_seed(2)
    v = torch.randn(1, 7, 8)
    moved = v.clone()
    moved[0, 3] += 5.0
    for kernel, touched in ((1, {3}), (3, {2, 3, 4})):
        eian = CEFLNet(8, 3, hidden=8, clip_kernel=kernel).eian.eval()
        assert eian.score.weight.shape == (3, 8, kernel)
        with torch.no_grad():
            delta = (eian.score(moved.transpose(1, 2)) - eian.score(v.transpose(1, 2))).abs().sum(dim=1)[0]
        assert {i for i in range(7) if delta[i] > 1e-6} == touched, kernel
    with pytest.raises(ValueError, match="odd"):
        CEFLNet(8, 3, clip_kernel=2)
    problems = TrainHeadConfig(clip_kernel=4).check("train_head")
    assert any("train_head.clip_kernel" in p for p in problems)


def test_checkpoint_from_before_clip_kernel_reloads(tmp_path):
    """Checkpoints written before `clip_kernel` existed hold kernel-3 weights; they still load."""
    from pipeline.head.train import load_head, save_head

    cfg = TrainHeadConfig(hidden=8, clip_kernel=3, center="none", fusion="none")
    model = build_head(cfg, 8, 3)
    path = tmp_path / "fold-0.pt"
    save_head(path, model.state_dict(), cfg, kind="ceflnet", in_dim=8, class_names=["a", "b", "c"], fold=0,
              test_video_ids=["v"], provenance={})
    ck = torch.load(path, weights_only=True)
    del ck["train_head"]["clip_kernel"], ck["train_head"]["fusion"]
    torch.save(ck, path)
    loaded = load_head(path)
    assert loaded.config.fusion == "none" and not hasattr(loaded.model, "fusion")
    assert loaded.config.clip_kernel == 3 and loaded.model.head.eian.score.weight.shape[-1] == 3
