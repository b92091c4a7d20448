"""Many folds in one program: K independent models ("members") trained side by side as stacked tensors.

Every per-fold model of the pipeline is small (at most a few million parameters, at most a few hundred
patients), so one fold alone leaves the CPU (or GPU) waiting on per-step Python and framework overhead.
Here member k of a stacked module is one fold's model: every parameter has a leading dimension K, a
layer runs all members with one batched kernel (``baddbmm``), and each member keeps what makes it an
independent training run:

* its own data: member k's minibatches come from its own rows and its own NumPy generator;
* its own randomness: initialisation, dropout masks and random modality draws use member k's torch
  generator only, and only while member k is stepping, so member k's numbers do not depend on how
  many other members there are or what they do;
* its own optimiser state, learning-rate schedule, early stopping and selected epoch
  (:func:`haf.runtime.fit.fit_stacked`).

So member k trained among K members gives what it gives trained alone (K = 1) up to float rounding of
the batched kernels (tested per model family).  Parameters of all members live in one flat buffer
(:class:`FlatParameters`): the optimiser step, the best-state copy and its restore are a handful of
tensor operations per step whatever the number of layers.

Members with fewer rows than others are padded: a padded row has ``valid`` False and never reaches a
loss, a batch statistic or a metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Members:
    """The K members' identities and random sources (seed k drives member k only).

    ``active`` is the mask of members taking part in the current optimiser step; stacked layers that
    draw random numbers (dropout) draw them for active members only.  ``rows`` (None = all): member k's
    real rows of the step, the first ``rows[k]`` along dim 1 (set by :func:`stacked_epoch` for each
    batch), so a member draws for its own rows only, never for the padding up to the widest member.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("a stacked run needs at least one member")
        self.device = torch.device(device)
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.generators = [torch.Generator(device=gen_device).manual_seed(s) for s in self.seeds]
        self.init_generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.rngs = [np.random.default_rng(s) for s in self.seeds]
        self.active = torch.ones(len(self.seeds), dtype=torch.bool)
        self.rows: list[int] | None = None

    @property
    def k(self) -> int:
        return len(self.seeds)

    def set_active(self, active: torch.Tensor | Sequence[bool]) -> None:
        self.active = torch.as_tensor(active, dtype=torch.bool).cpu().clone()

    def set_rows(self, rows: Sequence[int] | None) -> None:
        self.rows = None if rows is None else [int(r) for r in rows]

    def active_ids(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.active).reshape(-1)]


# ---------------------------------------------------------------------------------------------
# stacked layers


class _StackedLinearFunction(torch.autograd.Function):
    """``y_k = x_k W_k^T + b_k`` ((K, M, in) -> (K, M, out)) whose weight gradient comes out contiguous.

    Autograd's own backward of ``bmm(x, W.transpose(1, 2))`` returns dL/dW as a transposed view; adding
    that into the contiguous gradient buffer of :class:`FlatParameters` is a strided add, 10-15x slower
    than a contiguous one (measured: 0.93 ms vs 0.08 ms for 10 x 256 x 256 on one core) and ~14% of a
    PARACHUTE step.  Here dL/dW_k = g_k^T x_k is one ``bmm`` into a (K, out, in) tensor; dL/dx and dL/db
    are autograd's formulas.  Under autocast the gradients are taken in the output's dtype and returned in
    each input's own dtype (what autograd's casts do).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        w_t = weight.transpose(1, 2)
        return torch.bmm(x, w_t) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w_t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        dtype = grad.dtype
        grad_x = torch.bmm(grad, weight.to(dtype)).to(x.dtype) if need_x else None
        grad_w = torch.bmm(grad.transpose(1, 2), x.to(dtype)).to(weight.dtype) if need_w else None
        grad_b = grad.sum(dim=1).to(ctx.bias_dtype) if need_b and ctx.bias_dtype is not None else None
        return grad_x, grad_w, grad_b


class StackedLinear(nn.Module):
    """K linear layers ``y_k = x_k W_k^T + b_k``; ``x`` (K, ..., in) -> (K, ..., out).

    ``weight`` is (K, out, in) like K stacked ``nn.Linear`` weights, so member k's slice is an
    ``nn.Linear`` state dict (:meth:`member_state`).  Member k is initialised with its own generator,
    by ``init`` (``"torch"``: ``nn.Linear``'s default; ``"xavier_normal"``: Xavier-normal weights, zero
    bias, CLAM's).  ``in_widths`` gives each member's true input width when inputs are zero-padded to
    a common width: the padded columns start (and stay) zero and the init uses the true fan-in.
    """

    def __init__(
        self,
        members: Members,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str = "torch",
        in_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        k = members.k
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.zeros(k, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(k, out_features)) if bias else None
        widths = list(in_widths) if in_widths is not None else [in_features] * k
        self.in_widths = [int(w) for w in widths]
        with torch.no_grad():
            for i, gen in enumerate(members.init_generators):
                w = torch.empty(out_features, max(self.in_widths[i], 1))
                if init == "torch":
                    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
                elif init == "xavier_normal":
                    nn.init.xavier_normal_(w, generator=gen)
                else:
                    raise ValueError(f"init must be torch or xavier_normal, got {init!r}")
                self.weight[i, :, : self.in_widths[i]] = w[:, : self.in_widths[i]]
                if self.bias is not None and init == "torch":
                    bound = 1 / math.sqrt(max(self.in_widths[i], 1))
                    self.bias[i].uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        flat = x.reshape(k, -1, x.shape[-1])
        out = _StackedLinearFunction.apply(flat, self.weight, self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def member_state(self, k: int, prefix: str = "") -> dict[str, torch.Tensor]:
        """Member k as an ``nn.Linear(in_widths[k], out)`` state dict (keys ``prefix + weight/bias``)."""
        state = {f"{prefix}weight": self.weight[k, :, : self.in_widths[k]].detach().clone()}
        if self.bias is not None:
            state[f"{prefix}bias"] = self.bias[k].detach().clone()
        return state


class StackedDropout(nn.Module):
    """Dropout whose mask for member k comes from member k's generator, drawn only while k is active,
    over member k's own rows (``members.rows``, when set, for inputs with a batch dim: (K, B, ...))."""

    def __init__(self, members: Members, p: float) -> None:
        super().__init__()
        self.members = [members]  # a list: not a submodule
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        members = self.members[0]
        keep = torch.zeros_like(x, dtype=torch.bool)
        rows = members.rows if x.dim() >= 3 else None
        for i in members.active_ids():
            gen = members.generators[i]
            n = x.shape[1] if rows is None else min(rows[i], x.shape[1])
            draw = torch.rand((n, *x.shape[2:]), generator=gen, device=gen.device)
            keep[i, :n] = draw.to(x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class StackedLayerNorm(nn.Module):
    """LayerNorm over the last dimension with per-member affine parameters (K, d); init 1 and 0."""

    def __init__(self, members: Members, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members.k, d))
        self.bias = nn.Parameter(torch.zeros(members.k, d))
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        y = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape)

    def member_state(self, k: int, prefix: str = "") -> dict[str, torch.Tensor]:
        return {
            f"{prefix}weight": self.weight[k].detach().clone(),
            f"{prefix}bias": self.bias[k].detach().clone(),
        }


def member_state_dict(module: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Member k of a stacked module as the state dict of the equivalent single-fold module.

    Stacked layers contribute their :meth:`member_state`; any other parameter or buffer (stacked, with
    a leading K) contributes its slice k.  Names follow the module tree, so a stacked module mirroring
    a single-fold module's structure gives a state dict that module loads strictly.
    """
    state: dict[str, torch.Tensor] = {}
    handled: set[str] = set()
    for name, sub in module.named_modules():
        if hasattr(sub, "member_state"):
            prefix = f"{name}." if name else ""
            state.update(sub.member_state(k, prefix))
            handled.update(f"{prefix}{n}" for n, _ in sub.named_parameters(recurse=False))
    for name, p in module.named_parameters():
        if name not in handled:
            state[name] = p[k].detach().clone()
    return state


@torch.no_grad()
def load_member_state_dict(module: nn.Module, k: int, state: dict[str, torch.Tensor]) -> None:
    """Write a single-fold state dict into member k of a stacked module (the inverse of
    :func:`member_state_dict`): a warm start of one fold's member from that fold's own model.

    Strict: the keys and shapes must be exactly those :func:`member_state_dict` gives for member k
    (a mismatch names the key); the other members are untouched.  Values are copied exactly.
    """
    expected = member_state_dict(module, k)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(f"member state dict: missing keys {missing}, unexpected keys {unexpected}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"member state dict: {key} has shape {tuple(state[key].shape)}, expected "
                             f"{tuple(value.shape)}")  # fmt: skip
    handled: set[str] = set()
    for name, sub in module.named_modules():
        if not hasattr(sub, "member_state"):
            continue
        prefix = f"{name}." if name else ""
        for pname, p in sub.named_parameters(recurse=False):
            value = state[f"{prefix}{pname}"].to(device=p.device, dtype=p.dtype)
            if isinstance(sub, StackedLinear) and pname == "weight":
                p[k, :, : sub.in_widths[k]] = value  # padded input columns stay zero
            else:
                p[k] = value
            handled.add(f"{prefix}{pname}")
    for name, p in module.named_parameters():
        if name not in handled:
            p[k] = state[name].to(device=p.device, dtype=p.dtype)


# ---------------------------------------------------------------------------------------------
# the flat parameter buffer and the stacked optimisers


class FlatParameters:
    """Every trainable parameter of a stacked module as a view of one flat buffer (gradients too).

    Parameter j (leading dimension K) occupies one contiguous block of ``data``, so every parameter
    stays contiguous; ``member_of`` names the member of each element.  Gradients are pre-allocated as
    views of ``grad``, so ``backward`` accumulates straight into the flat buffer and an optimiser step
    is a handful of element-wise operations whatever the number of layers.
    """

    def __init__(self, module: nn.Module, k: int) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.dim() == 0 or p.shape[0] != k:
                raise ValueError(
                    f"a stacked parameter has shape {tuple(p.shape)}, expected a leading K = {k}"
                )
        device = params[0].device if params else torch.device("cpu")
        sizes = [p.numel() for p in params]
        self.k, self.params = k, params
        self.data = torch.zeros(int(sum(sizes)), device=device)
        self.grad = torch.zeros_like(self.data)
        self.blocks: list[tuple[int, int]] = []  # (offset, elements per member)
        member_of = []
        offset = 0
        for p, n in zip(params, sizes, strict=True):
            view = self.data[offset : offset + n].view(p.shape)
            view.copy_(p.detach())
            p.data = view
            p.grad = self.grad[offset : offset + n].view(p.shape)
            per = n // k
            self.blocks.append((offset, per))
            member_of.append(torch.arange(k, device=device).repeat_interleave(per))
            offset += n
        self.member_of = torch.cat(member_of) if member_of else torch.zeros(0, dtype=torch.long)
        self.frozen = torch.zeros_like(self.data, dtype=torch.bool)
        self.frozen_blocks: set[tuple[int, int]] = set()  # (member, block) pairs that are frozen

    def freeze(self, k: int, module: nn.Module) -> None:
        """Member k never updates ``module``'s parameters (e.g. a projector no training patient of its
        fold can train): the stacked counterpart of ``requires_grad_(False)`` for one fold."""
        ids = {id(p) for p in module.parameters()}
        for j, (p, (o, n)) in enumerate(zip(self.params, self.blocks, strict=True)):
            if id(p) in ids:
                self.frozen[o + k * n : o + (k + 1) * n] = True
                self.frozen_blocks.add((k, j))

    def zero_grad(self) -> None:
        self.grad.zero_()

    def check_grads(self) -> None:
        """Every gradient still accumulates into the flat buffer (autograd never swapped one out)."""
        base = self.grad.untyped_storage().data_ptr()
        for p in self.params:
            if p.grad is None or p.grad.untyped_storage().data_ptr() != base:
                raise RuntimeError("a parameter's gradient is no longer a view of the flat gradient buffer")

    def snapshot(self, k: int) -> torch.Tensor:
        """Member k's parameters (a copy), e.g. its best epoch's state."""
        return torch.cat([self.data[o + k * n : o + (k + 1) * n] for o, n in self.blocks]).clone()

    def load(self, k: int, values: torch.Tensor) -> None:
        with torch.no_grad():
            start = 0
            for o, n in self.blocks:
                self.data[o + k * n : o + (k + 1) * n] = values[start : start + n]
                start += n


class StackedAdam:
    """Adam (``decoupled=False``, L2 weight decay like ``torch.optim.Adam``) or AdamW, per member.

    Each member has its own learning rate (``lr``, (K,)) and step count; :meth:`step` updates only the
    active members (an inactive member's parameters, moments and step count are untouched).  The
    update is ``torch.optim.Adam``'s: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``; AdamW first scales
    ``p *= 1 - lr * wd``.  It runs as torch's fused Adam/AdamW kernel (``torch._fused_adam(w)_``, the
    kernel of ``torch.optim.Adam(fused=True)``: one pass over each member's parameters, grouped by
    learning rate) where torch has one; else (``fused = False``) in whole-buffer tensor operations.
    """

    fused: bool = True

    def __init__(
        self,
        flat: FlatParameters,
        lr: float,
        weight_decay: float,
        *,
        decoupled: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.flat = flat
        device = flat.data.device
        self.lr = torch.full((flat.k,), float(lr), device=device, dtype=torch.float64)
        self.weight_decay = float(weight_decay)
        self.decoupled = bool(decoupled)
        self.b1, self.b2 = betas
        self.eps = float(eps)
        self.m = torch.zeros_like(flat.data)
        self.v = torch.zeros_like(flat.data)
        self.t = torch.zeros(flat.k, device=device, dtype=torch.float64)
        self._views: list[list[tuple[torch.Tensor, ...]]] | None = None
        self._steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in range(flat.k)]

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the active members, in place (torch's fused kernel over each active member's
        parameter blocks, see the class docstring).  A block frozen for a member
        (:meth:`FlatParameters.freeze` freezes whole blocks) is left out."""
        active = active.to(self.t.device)
        ids = [int(i) for i in torch.nonzero(active).reshape(-1)]
        if not ids:
            return
        self.t += active.to(self.t.dtype)
        kernel = getattr(torch, "_fused_adamw_" if self.decoupled else "_fused_adam_", None)
        if self.fused and kernel is not None and self.flat.data.device.type in ("cpu", "cuda"):
            self._fused_step(kernel, active)
        else:
            self._tensor_step(active)

    def _fused_step(self, kernel, active: torch.Tensor) -> None:
        """Each member's (parameter, grad, m, v) slices through torch's fused kernel, one call per lr."""
        flat = self.flat
        if self._views is None:
            self._views = [
                [
                    tuple(buf[o + i * n : o + (i + 1) * n] for buf in (flat.data, flat.grad, self.m, self.v))
                    for o, n in flat.blocks
                ]
                for i in range(flat.k)
            ]
        lrs, steps = self.lr.tolist(), self.t.tolist()
        groups: dict[float, list[int]] = {}
        for i in torch.nonzero(active.cpu()).reshape(-1).tolist():
            groups.setdefault(lrs[i], []).append(i)
            self._steps[i].fill_(steps[i])
        for lr, members in groups.items():
            lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [])
            for i in members:
                for j, views in enumerate(self._views[i]):
                    if (i, j) not in flat.frozen_blocks:
                        for target, view in zip(lists, (*views, self._steps[i]), strict=True):
                            target.append(view)
            params, grads, exp_avgs, exp_avg_sqs, state_steps = lists
            if not params:
                continue
            kernel(params, grads, exp_avgs, exp_avg_sqs, [], state_steps, lr=lr, beta1=self.b1, beta2=self.b2,
                   weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False)  # fmt: skip

    def _tensor_step(self, active: torch.Tensor) -> None:
        """The same update in whole-buffer tensor operations (where torch has no fused kernel)."""
        everyone = bool(active.all())
        dtype = self.flat.data.dtype
        t = self.t.clamp(min=1)  # inactive members with t = 0 are masked out below
        lr = self.lr.to(dtype)[self.flat.member_of]
        step_size = (self.lr / (1 - self.b1**t)).to(dtype)[self.flat.member_of]
        bc2_sqrt = (1 - self.b2**t).sqrt().to(dtype)[self.flat.member_of]
        p, g = self.flat.data, self.flat.grad
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p
        m = self.m * self.b1 + (1 - self.b1) * g
        v = self.v * self.b2 + (1 - self.b2) * g * g
        new_p = p * (1 - lr * self.weight_decay) if (self.weight_decay and self.decoupled) else p
        new_p = new_p - step_size * m / (v.sqrt() / bc2_sqrt + self.eps)
        frozen = self.flat.frozen
        if everyone and not self.flat.frozen_blocks:
            self.m.copy_(m)  # in place: the fused path's views of m and v stay valid
            self.v.copy_(v)
            p.copy_(new_p)
        else:
            mask = active[self.flat.member_of] & ~frozen
            self.m.copy_(torch.where(mask, m, self.m))
            self.v.copy_(torch.where(mask, v, self.v))
            p.copy_(torch.where(mask, new_p, p))


# ---------------------------------------------------------------------------------------------
# per-member learning-rate schedules (the formulas of torch's schedulers, vectorised)


class StackedPlateau:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode min, threshold 1e-4 rel, cooldown 0) per member."""

    def __init__(self, optimizer: StackedAdam, factor: float, patience: int, threshold: float = 1e-4) -> None:
        self.opt = optimizer
        self.factor, self.patience, self.threshold = float(factor), int(patience), float(threshold)
        k = optimizer.flat.k
        self.best = np.full(k, np.inf)
        self.bad = np.zeros(k, dtype=int)

    def step(self, values: np.ndarray, members: np.ndarray) -> None:
        """``values`` (K,) validation losses; only ``members`` (bool K,) advance."""
        for i in np.flatnonzero(members):
            current = float(values[i]) if math.isfinite(float(values[i])) else math.inf
            if current < self.best[i] * (1.0 - self.threshold):
                self.best[i], self.bad[i] = current, 0
            else:
                self.bad[i] += 1
            if self.bad[i] > self.patience:
                old = float(self.opt.lr[i])
                new = old * self.factor
                if old - new > 1e-8:
                    self.opt.lr[i] = new
                self.bad[i] = 0


class StackedCosine:
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` per member (closed form; period 2 * t_max)."""

    def __init__(self, optimizer: StackedAdam, t_max: int, eta_min: float) -> None:
        self.opt = optimizer
        self.base = optimizer.lr.clone()
        self.t_max, self.eta_min = int(t_max), float(eta_min)
        self.epoch = np.zeros(optimizer.flat.k, dtype=int)

    def step(self, values: np.ndarray, members: np.ndarray) -> None:
        for i in np.flatnonzero(members):
            self.epoch[i] += 1
            cos = (1 + math.cos(math.pi * self.epoch[i] / self.t_max)) / 2
            self.opt.lr[i] = self.eta_min + (float(self.base[i]) - self.eta_min) * cos


# ---------------------------------------------------------------------------------------------
# batches: each member's own minibatches, padded into one (K, B) index matrix


@dataclass
class StackedBatch:
    """One optimiser step of every active member: row indices (K, B) into each member's rows."""

    rows: torch.Tensor  # (K, B) long; padded entries point at row 0
    valid: torch.Tensor  # (K, B) bool
    active: torch.Tensor  # (K,) bool: the member has a batch at this step

    @property
    def counts(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def member_minibatches(idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One member's shuffled minibatches; a trailing batch of one joins the previous (Cox/BN need 2+)."""
    order = rng.permutation(idx)
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] < 2:
        starts.pop()
    return [order[s : (starts[j + 1] if j + 1 < len(starts) else len(order))] for j, s in enumerate(starts)]


def stacked_epoch(
    members: Members,
    train_rows: Sequence[np.ndarray],
    batch_size: int,
    running: np.ndarray,
    device: torch.device | str = "cpu",
) -> Iterator[StackedBatch]:
    """The steps of one epoch: member k's minibatches (its rng), for the members still ``running``.

    A member draws its permutation only while it runs, so its batches never depend on the others;
    while a batch is out, ``members.rows`` holds each member's batch length (dropout draws over those
    rows only, not over the padding to the widest member, which depends on the others).
    """
    k = members.k
    per_member = [
        member_minibatches(np.asarray(train_rows[i]), batch_size, members.rngs[i]) if running[i] else []
        for i in range(k)
    ]
    n_steps = max((len(b) for b in per_member), default=0)
    width = max((len(x) for b in per_member for x in b), default=0)
    try:
        for step in range(n_steps):
            rows = torch.zeros(k, width, dtype=torch.long)
            valid = torch.zeros(k, width, dtype=torch.bool)
            active = torch.zeros(k, dtype=torch.bool)
            counts = [0] * k
            for i, batches in enumerate(per_member):
                if step < len(batches):
                    b = torch.as_tensor(batches[step], dtype=torch.long)
                    rows[i, : len(b)] = b
                    valid[i, : len(b)] = True
                    active[i] = True
                    counts[i] = len(b)
            members.set_rows(counts)  # dropout draws over each member's own rows only
            yield StackedBatch(rows.to(device), valid.to(device), active)
    finally:
        members.set_rows(None)


def pad_rows(
    index_lists: Sequence[np.ndarray], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of every member (e.g. its validation part) as a padded (K, n_max) matrix and mask."""
    width = max((len(x) for x in index_lists), default=0)
    rows = torch.zeros(len(index_lists), width, dtype=torch.long)
    valid = torch.zeros(len(index_lists), width, dtype=torch.bool)
    for i, idx in enumerate(index_lists):
        rows[i, : len(idx)] = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        valid[i, : len(idx)] = True
    return rows.to(device), valid.to(device)


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x`` (K, n, ...) -> (K, B, ...) rows per member."""
    index = rows.reshape(*rows.shape, *([1] * (x.dim() - 2))).expand(*rows.shape, *x.shape[2:])
    return torch.gather(x, 1, index)


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(K, B) -> (K,) mean over each member's valid entries (0 for a member without any)."""
    w = valid.to(values.dtype)
    return (torch.where(valid, values, torch.zeros_like(values)) * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)


# ---------------------------------------------------------------------------------------------
# one model definition for one fold and for K stacked folds


class Layers:
    """Builds a model's layers as plain ``nn`` modules (one model) or stacked over ``members``.

    A model written against this factory, with a forward that indexes from the right (``...``,
    negative dims), is the same code for one fold (inputs (B, ...)) and for K folds (inputs
    (K, B, ...)); member k of the stacked model loads into the plain model with
    :func:`member_state_dict`, so prediction and checkpoints use the plain model.
    """

    def __init__(self, members: Members | None = None) -> None:
        self.members = members

    @property
    def stacked(self) -> bool:
        return self.members is not None

    def linear(
        self,
        d_in: int,
        d_out: int,
        bias: bool = True,
        *,
        init: str = "torch",
        in_widths: Sequence[int] | None = None,
    ) -> nn.Module:
        if self.members is not None:
            return StackedLinear(self.members, d_in, d_out, bias, init=init, in_widths=in_widths)
        layer = nn.Linear(d_in, d_out, bias=bias)
        if init == "xavier_normal":
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        return layer

    def dropout(self, p: float) -> nn.Module:
        return StackedDropout(self.members, p) if self.members is not None else nn.Dropout(p)

    def layer_norm(self, d: int) -> nn.Module:
        return StackedLayerNorm(self.members, d) if self.members is not None else nn.LayerNorm(d)

    def parameter(self, *shape: int, std: float = 0.02) -> nn.Parameter:
        """A learned tensor (e.g. a missing-modality token), normal(0, std) per member; (K, *shape) stacked."""
        if self.members is None:
            return nn.Parameter(torch.randn(*shape) * std)
        values = torch.stack([torch.randn(*shape, generator=g) * std for g in self.members.init_generators])
        return nn.Parameter(values)
