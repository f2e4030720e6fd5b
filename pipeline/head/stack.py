"""The k folds of a run as one model: every parameter gets a leading fold dimension (issue 28).

A step of 8 videos is far too small to keep a CPU (or a GPU) busy; one step of all folds at once is
k times larger and pays the per-step overhead once. Each fold still trains exactly as it would alone:

- its own parameters, initialised from its own seed, and its own fitted input (InputTransform buffers);
- its own Adam moments and step count (`FoldAdam`): Adam is elementwise, so the fused update of one fold's
  slices is that fold's update, and a fold without a batch in this step is left untouched;
- its own dropout masks, drawn from its own generator in the order training alone draws them: the
  generator starts from the global RNG state right after the fold's model was built, which is where a
  fold trained alone draws its masks from (so the masks equal a lone run's on the CPU, dropout on or off).

`CEFLNetStack` is the paper's head (`WithInput(InputTransform, CEFLNet(variant=paper))`) written with
batched matmuls: the same equations as pipeline/head/model.py in the same order (tests check values and
gradients against the module), with the big weights stored transposed so that their gradients come
out of the matmul in the stored layout. On the CPU two products are taken a cheaper way
(`CEFLNetStack.shortcuts`: W_QK's raw rows on the videos whose raw stream `raw_dropout` kept, W_V's
gradient in one product); a test checks them against the plain ones a GPU runs. Measured on 2 cores
(bench/results/head_cpu.md): torch.func's vmap over the module was ~1.5x slower per step (a transposing
copy of every weight gradient) and has no batching rule for nn.LSTM. `ModuleStack` runs any other head
(the ablation rows, `variant: authors`) fold after fold inside the step, each fold under its own RNG
state: the same numbers as training alone.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.adam import adam

from pipeline.head.baselines import WithInput
from pipeline.head.model import CEFLNet, HeadOutput

TRANSPOSED = ("head.cfe.sal.qk.weight", "head.cfe.sal.v.weight", "head.cfe.lrl.q1.weight")
"""nn.Linear weights (out, in) kept as (F, in, out): `x @ W` then yields the gradient in that layout."""
QK = "head.cfe.sal.qk.weight"
QK_CHANGING, QK_RAW = QK + "[changing]", QK + "[raw]"
"""With a two-stream input, W_QK's rows for each stream, kept apart (`CEFLNetStack._qk`)."""


def rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class SharedGradient:
    """W_V's gradient from its two uses in the batched head, taken in one product instead of two plus a sum.

    W_V (F, D, H) enters twice: u = q0 W_V^T (eq. 2's frame weights) and pooled W_V (eq. 3). Autograd would
    compute pooled^T g_v and g_u^T q0 and add the two (F, D, H) results: at the demo's shapes 11 ms of a
    130 ms step went to that sum alone (bench_head.py --profile-step). `LastUse`'s backward runs first
    (u is an ancestor of pooled), leaves its share here, and `FirstUse`'s backward returns
    [pooled : g_u]^T [g_v : q0], both shares in one batched matmul."""

    def __init__(self):
        self.pooled: torch.Tensor | None = None
        self.grad_out: torch.Tensor | None = None


class FirstUse(torch.autograd.Function):
    """u = q0 @ W_V^T; its backward returns W_V's whole gradient (`SharedGradient`)."""

    @staticmethod
    def forward(ctx, q0: torch.Tensor, wv: torch.Tensor, shared: SharedGradient) -> torch.Tensor:
        ctx.save_for_backward(q0, wv)
        ctx.shared = shared
        return q0 @ wv.transpose(1, 2)

    @staticmethod
    def backward(ctx, g_u: torch.Tensor):
        q0, wv = ctx.saved_tensors
        sh = ctx.shared
        g_q0 = g_u @ wv if ctx.needs_input_grad[0] else None
        if sh.pooled is None:  # eq. 3's use took no gradient
            g_wv = g_u.transpose(1, 2) @ q0
        else:
            g_wv = torch.cat([sh.pooled, g_u], dim=1).transpose(1, 2) @ torch.cat([sh.grad_out, q0], dim=1)
        sh.pooled = sh.grad_out = None
        return g_q0, g_wv, None


class LastUse(torch.autograd.Function):
    """pooled @ W_V; its backward leaves W_V's share to `FirstUse`."""

    @staticmethod
    def forward(ctx, pooled: torch.Tensor, wv: torch.Tensor, shared: SharedGradient) -> torch.Tensor:
        ctx.save_for_backward(pooled, wv)
        ctx.shared = shared
        return pooled @ wv

    @staticmethod
    def backward(ctx, g_out: torch.Tensor):
        pooled, wv = ctx.saved_tensors
        ctx.shared.pooled, ctx.shared.grad_out = pooled, g_out
        return g_out @ wv.transpose(1, 2) if ctx.needs_input_grad[0] else None, None, None


class KeptRows(torch.autograd.Function):
    """out + raw @ W for the kept videos' rows of each fold, in place on `out` (F, B, n*K, 2H); raw (F, B, n*K, R)
    carries no gradient, W (F, R, 2H) gets its gradient fold by fold in one tensor (no per-fold slices to stack):
    zero for a fold that kept no video, which so still takes its Adam step, as training alone does."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, raw: torch.Tensor, w: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
        for f, r in enumerate(rows):
            if len(r):
                out[f].index_add_(0, r, raw[f, r] @ w[f])
        ctx.mark_dirty(out)
        ctx.save_for_backward(raw)
        ctx.rows, ctx.w_dtype = rows, w.dtype
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (raw,) = ctx.saved_tensors
        gw = g.new_empty(raw.shape[0], raw.shape[-1], g.shape[-1], dtype=ctx.w_dtype)
        for f, r in enumerate(ctx.rows):
            if not len(r):
                gw[f].zero_()
            elif g.dtype == gw.dtype:
                torch.mm(raw[f, r].flatten(0, 1).t(), g[f, r].flatten(0, 1), out=gw[f])
            else:  # bf16 autocast: the product in g's precision, as autograd takes `raw @ w`'s, W's gradient in W's
                gw[f].copy_(raw[f, r].flatten(0, 1).to(g.dtype).t() @ g[f, r].flatten(0, 1))
        return g, None, gw, None


class CEFLNetStack:
    """k fitted `WithInput(InputTransform, CEFLNet paper)` heads as one batched model (F = k)."""

    def __init__(self, models: Sequence[nn.Module]):
        first = models[0]
        self.n_folds = len(models)
        self.device = next(first.parameters()).device
        self.raw, self.raw_dropout = first.input.raw, first.input.raw_dropout
        cfe, eian = first.head.cfe, first.head.eian
        self.scale, self.dropout, self.kernel = cfe.sal.scale, eian.drop.p, eian.score.kernel_size[0]
        self.param_names = [k for k, _ in first.named_parameters()]
        self.buffer_names = [k for k, _ in first.named_buffers()]
        self.module_keys = list(first.state_dict())
        states = [m.state_dict() for m in models]

        def stacked(key: str) -> torch.Tensor:
            return torch.stack([s[key].t() if key in TRANSPOSED else s[key] for s in states]).contiguous()

        self.params = {k: stacked(k).requires_grad_() for k in self.param_names}
        self.buffers = {k: stacked(k) for k in self.buffer_names}
        self.basis: torch.Tensor | None = None  # two-stream inputs: (F, r, R), the identity directions in use
        if self.raw:
            # W_QK's rows for the changing and the raw stream as two tensors (Adam is elementwise: the same
            # update), so that `_qk` multiplies each stream by its own rows without a split whose backward would
            # copy the whole (F, D, 2H) gradient together again; `state_dict` joins them.
            w = self.params.pop(QK)
            self.params[QK_CHANGING], self.params[QK_RAW] = (
                t.contiguous().requires_grad_() for t in w.detach().split(w.shape[1] - self.raw, dim=1))
            self.param_names = [n for k in self.param_names for n in ((QK_CHANGING, QK_RAW) if k == QK else (k,))]
            # Only the identity directions some fold really has (InputTransform.fit zeroes the rest): with
            # `subject_norm` the people's means coincide and there are none, and two (F, B*n*K, R) x (R, 64)
            # matmuls of zeros were 1.7 % of a step (bench_head.py --profile-step). Skipped when no fold has one,
            # which changes no number; trailing zero rows are cut otherwise. The checkpoints keep the full buffer.
            used = self.buffers["input.basis"].abs().sum(dim=(0, 2)) > 0  # (r,) fixed while training
            self.basis = self.buffers["input.basis"][:, :int(used.nonzero().max()) + 1 if used.any() else 0]
        self.generators: list[torch.Generator] = []  # one per fold, set by stack_heads
        # The CPU's cheaper products (`_qk`'s kept rows, `SharedGradient`): the same numbers to float rounding. A GPU
        # runs the plain ones: its per-fold index lists would need a device sync a fold and step (not measured: no
        # GPU here); tests run both on the CPU.
        self.shortcuts = self.device.type == "cpu"
        self.training = True

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def eval(self) -> None:
        self.training = False

    def fold_params(self, f: int) -> list[torch.Tensor]:
        return [self.params[k][f] for k in self.param_names]

    def fold_grads(self, f: int) -> list[torch.Tensor | None]:
        return [None if self.params[k].grad is None else self.params[k].grad[f] for k in self.param_names]

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def state_dict(self, f: int) -> dict[str, torch.Tensor]:
        """Fold f's weights as the module's state_dict (checkpoints keep today's format)."""
        tensors = {**self.params, **self.buffers}
        if QK_RAW in tensors:
            tensors[QK] = torch.cat([tensors.pop(QK_CHANGING), tensors.pop(QK_RAW)], dim=1)
        return {k: (tensors[k][f].t() if k in TRANSPOSED else tensors[k][f]).detach().cpu().contiguous()
                for k in self.module_keys}

    def _keep(self, shape: tuple[int, ...], counts: Sequence[int], draw) -> torch.Tensor:
        """(F, B, *shape) dropout factors: fold f's first counts[f] rows from its own generator, 0 elsewhere
        (padding rows and folds sitting the step out carry no loss)."""
        out = torch.zeros(self.n_folds, self.batch, *shape, device=self.device)
        for f, n in enumerate(counts):
            if n:
                out[f, :n] = draw((n, *shape), self.generators[f])
        return out

    def _qk(self, changing: torch.Tensor, raw: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Eq. 1's `tokens @ W_QK` (F, T, 2H) from the input transform's two streams, changing (F, T, D - R) and raw
        (F, T, R), each times its rows of W_QK. In training after `raw_dropout` (`keep`: (F, B, 1, 1, 1)) the
        dropped videos' raw stream is zero, so with `shortcuts` the raw rows multiply the kept videos only, fold by
        fold: the same numbers to float rounding and, at `raw_dropout` 0.5, a quarter fewer multiply-adds in eq. 1's
        projection, forward and weight gradient (bench/results/head_cpu.md)."""
        out = changing @ self.params[QK_CHANGING]  # (F, T, 2H)
        if keep is None or not self.shortcuts:
            return out + raw @ self.params[QK_RAW]
        fn, b = keep.shape[:2]
        rows = [r.nonzero().view(-1) for r in keep.view(fn, b) > 0]  # each fold's kept videos
        out = KeptRows.apply(out.view(fn, b, -1, out.shape[-1]), raw.view(fn, b, -1, raw.shape[-1]),
                             self.params[QK_RAW], rows)
        return out.view(fn, -1, out.shape[-1])

    def __call__(self, x: torch.Tensor, counts: Sequence[int] | None = None) -> HeadOutput:
        """x: (F, B, n, K, in_dim) -> HeadOutput with a leading F on every field. `counts`: the real rows of
        each fold in this batch (training only: whose dropout masks to draw)."""
        p, buf = self.params, self.buffers
        fn, b, n, k, _ = x.shape
        self.batch = b
        drop = self.training and torch.is_grad_enabled()
        raw_keep = None
        if self.raw:  # InputTransform (pipeline/head/inputs.py)
            changing, raw = x[..., :-self.raw], x[..., -self.raw:] - buf["input.mean"].view(fn, 1, 1, 1, -1)
            flat = raw.reshape(fn, -1, self.raw)  # (F, B*n*K, R)
            basis = self.basis  # (F, r, R), r: the directions any fold uses
            if basis.shape[1]:
                raw = (flat - (flat @ basis.transpose(1, 2)) @ basis).view_as(raw)
            if self.raw_dropout and drop:
                raw_keep = self._keep((1, 1, 1), counts,
                                      lambda s, g: torch.rand(s, generator=g, device=self.device) >= self.raw_dropout)
                raw = raw * raw_keep
            streams = [changing, raw]
        else:
            streams = [x]
        widths = [t.shape[-1] for t in streams]
        if "input.scale" in buf:
            scale = buf["input.scale"].view(fn, 1, 1, 1, -1).split(widths, dim=-1)
            streams = [t * s for t, s in zip(streams, scale)]
        # CFE (model.CFE.forward, eq. 1-3), with F * B * n clips. The input's streams stay apart (no frame-sized
        # concatenation of the two): each product with the input is a sum over its streams.
        streams = [t.reshape(fn, b * n * k, -1) for t in streams]  # (F, T, D_i)
        qk = self._qk(*streams, raw_keep) if self.raw else streams[0] @ p[QK]  # (F, T, 2H)
        q, key = qk.chunk(2, dim=-1)  # 2 x (F, T, H)
        q, key = q.reshape(fn * b * n, k, -1), key.reshape(fn * b * n, k, -1)  # (N, K, H), N = F*B*n
        att = torch.softmax(q @ key.transpose(-2, -1) * self.scale, dim=-1)  # (N, K, K)
        wv, q0 = p["head.cfe.sal.v.weight"], p["head.cfe.lrl.q0.weight"].view(fn, 2, -1)  # (F, D, H), (F, 2, H)
        # W_V's gradient from its two uses in one product (`SharedGradient`), where autocast leaves dtypes alone
        shared = SharedGradient() if self.shortcuts and torch.is_grad_enabled() \
            and not torch.is_autocast_enabled(self.device.type) else None
        u = q0 @ wv.transpose(1, 2) if shared is None else FirstUse.apply(q0, wv, shared)  # (F, 2, D)
        # u @ tokens^T rather than tokens @ u^T: the same product (to float rounding), but autograd then takes
        # u's gradient as (F, 2, T) @ (F, T, D), 0.36 ms a step at the demo's shapes (5 folds, one thread), instead
        # of (F, D, T) @ (F, T, 2), 5.4 ms (bench_head.py --profile-step 1024).
        ut = sum(ui @ t.transpose(1, 2) for ui, t in zip(u.split(widths, dim=-1), streams))  # (F, 2, T)
        fu = att @ ut.transpose(1, 2).reshape(fn * b * n, k, 2)  # (N, K, 2)
        logit = (fu[..., 0].mean(dim=1, keepdim=True) + fu[..., 1]).view(fn, b * n, k) \
            + p["head.cfe.lrl.q0.bias"].view(fn, 1, 1)  # (F, B*n, K)   eq. 2
        w = torch.sigmoid(logit).view(fn * b * n, k)  # (N, K)
        c = (w.unsqueeze(1) @ att).squeeze(1) / w.sum(dim=1, keepdim=True)  # (N, K)
        pooled = torch.cat([(c.unsqueeze(1) @ t.view(fn * b * n, k, -1)).view(fn, b * n, -1) for t in streams],
                           dim=-1)  # (F, B*n, D)
        pv = pooled @ wv if shared is None else LastUse.apply(pooled, wv, shared)  # (F, B*n, H)
        v = pv @ p["head.cfe.lrl.q1.weight"]  # (F, B*n, H)   eq. 3
        h = v.shape[-1]
        # EIAN (model.EIAN.forward, eq. 4-9): the clip-scoring conv as one matmul per kernel tap
        sw = p["head.eian.score.weight"]  # (F, C, H, kernel)
        pad = self.kernel // 2
        vp = F.pad(v.view(fn, b, n, h), (0, 0, pad, pad))  # (F, B, n + 2 pad, H)
        score = sum(vp[:, :, t:t + n].reshape(fn, b * n, h) @ sw[..., t].transpose(1, 2) for t in range(self.kernel))
        score = score + p["head.eian.score.bias"].view(fn, 1, -1)  # (F, B*n, C)
        a = torch.softmax(score.view(fn, b, n, -1).transpose(2, 3), dim=-1)  # (F, B, C, n)   eq. 5
        m = a.unsqueeze(-1) * v.view(fn, b, 1, n, h)  # (F, B, C, n, H)   eq. 7
        clip_max = m.amax(dim=3)  # (F, B, C, H)   eq. 8
        read = clip_max
        if self.dropout and drop:
            keep = 1.0 - self.dropout  # F.dropout's mask: bernoulli_(1 - p), divided by 1 - p
            read = clip_max * self._keep(clip_max.shape[2:], counts, lambda s, g: torch.empty(
                s, device=self.device).bernoulli_(keep, generator=g).div_(keep))
        logits = (read * p["head.eian.fc_weight"].unsqueeze(1)).sum(-1) + p["head.eian.fc_bias"].unsqueeze(1)  # (F, B, C)
        pred = logits.argmax(dim=-1, keepdim=True)  # (F, B, 1)
        rich = a.gather(2, pred[..., None].expand(-1, -1, 1, n)).squeeze(2).argmax(dim=-1)  # (F, B)   eq. 6
        emb = clip_max.gather(2, pred[..., None].expand(-1, -1, 1, h)).squeeze(2)  # (F, B, H)
        return HeadOutput(logits, a, rich, emb)


class ModuleStack:
    """Any head, one module per fold, run fold after fold inside each batched step under the fold's own RNG
    state (so its dropout masks are those of training alone). Outputs are padded to (F, B, ...)."""

    def __init__(self, models: Sequence[nn.Module]):
        self.models = list(models)
        self.n_folds = len(models)
        self.device = next(models[0].parameters()).device
        self.rng: list[torch.Tensor] = []  # one per fold, set by stack_heads
        self.training = models[0].training

    def train(self, mode: bool = True) -> None:
        self.training = mode
        for m in self.models:
            m.train(mode)

    def eval(self) -> None:
        self.train(False)

    def fold_params(self, f: int) -> list[torch.Tensor]:
        return list(self.models[f].parameters())

    def fold_grads(self, f: int) -> list[torch.Tensor | None]:
        return [p.grad for p in self.models[f].parameters()]

    def zero_grad(self) -> None:
        for m in self.models:
            m.zero_grad(set_to_none=True)

    def state_dict(self, f: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.models[f].state_dict().items()}

    def __call__(self, x: torch.Tensor, counts: Sequence[int] | None = None) -> HeadOutput:
        counts = list(counts) if counts is not None else [x.shape[1]] * self.n_folds
        outs = []
        for f, (model, c) in enumerate(zip(self.models, counts)):
            if not c:
                outs.append(None)
                continue
            if self.training:
                set_rng_state(self.rng[f], self.device)
            outs.append(model(x[f, :c]))
            if self.training:
                self.rng[f] = rng_state(self.device)
        ref = next(o for o in outs if o is not None)

        def padded(field: str) -> torch.Tensor:
            like = getattr(ref, field)
            out = like.new_zeros((self.n_folds, x.shape[1], *like.shape[1:]))
            return torch.stack([torch.cat([getattr(o, field), out[f, len(getattr(o, field)):]]) if o is not None
                                else out[f] for f, o in enumerate(outs)])

        return HeadOutput(*(padded(k) for k in ("logits", "clip_scores", "rich_clip", "embedding")))


def is_paper_ceflnet(model: nn.Module) -> bool:
    return isinstance(model, WithInput) and isinstance(model.head, CEFLNet) and model.head.variant == "paper"


def stack_heads(models: Sequence[nn.Module], rng_states: Sequence[torch.Tensor]) -> CEFLNetStack | ModuleStack:
    """The batched model of these fold heads; `rng_states[f]`: the global RNG state right after fold f's head
    was built (where training alone draws its dropout masks from)."""
    if all(is_paper_ceflnet(m) for m in models):
        stack = CEFLNetStack(models)
        stack.generators = []
        for s in rng_states:
            g = torch.Generator(device=stack.device)
            g.set_state(s)
            stack.generators.append(g)
        return stack
    stack = ModuleStack(models)
    stack.rng = list(rng_states)
    return stack


class FoldAdam:
    """torch.optim.Adam (fused) applied fold by fold on the stack's per-fold parameters: each fold keeps its
    own moments and step count, and `step(folds)` updates only the folds that had a batch."""

    def __init__(self, stack: CEFLNetStack | ModuleStack, lr: float, weight_decay: float):
        self.stack, self.lr, self.weight_decay = stack, lr, weight_decay
        self.params = [stack.fold_params(f) for f in range(stack.n_folds)]
        self.exp_avg = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in ps] for ps in self.params]
        self.exp_avg_sq = [[torch.zeros_like(p, memory_format=torch.preserve_format) for p in ps] for ps in self.params]
        self.steps = [[torch.zeros((), dtype=torch.float32, device=p.device) for p in ps] for ps in self.params]

    @torch.no_grad()
    def step(self, folds: Sequence[int]) -> None:
        lists: tuple[list, ...] = ([], [], [], [], [])
        for f in folds:
            for i, g in enumerate(self.stack.fold_grads(f)):
                if g is None:  # as torch.optim: a parameter without a gradient is skipped, its step not counted
                    continue
                for lst, t in zip(lists, (self.params[f][i], g, self.exp_avg[f][i], self.exp_avg_sq[f][i],
                                          self.steps[f][i])):
                    lst.append(t)
        if lists[0]:
            params, grads, m, v, steps = lists
            adam(params, grads, m, v, [], steps, fused=True, amsgrad=False, beta1=0.9, beta2=0.999, lr=self.lr,
                 weight_decay=self.weight_decay, eps=1e-8, maximize=False)
