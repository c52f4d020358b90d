"""The models the training engine steps: one at a time, or all sizes stacked under ``vmap``.

Both give, for the ``N`` local sizes they hold, ``logits`` ``Nx2xSxS`` and per size
the head-A colours ``1x2x3x(S/l)x(S/l)`` and head-B colours ``1x2x3x(S/2l)x(S/2l)``
(:mod:`gloper_jobs.methods.gloper_model` for the shapes). Every model of one seed
starts from the same weights, as separate seeded models do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.gloper_model import GloperNet, centroid_colours

if TYPE_CHECKING:
    from gloper_jobs.methods.gloper_engine import EngineOptions

Outputs = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]
#: AdamW's state per GloperNet parameter name ({"step", "exp_avg", "exp_avg_sq"} tensors)
OptimizerState = dict[str, dict[str, torch.Tensor]]
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


class ModelSet(Protocol):
    """The models of the local sizes still training (``sizes``, in order)."""

    sizes: list[int]

    def forward(self, image: torch.Tensor) -> Outputs:
        """``image`` ``1x3xSxS`` -> (logits ``Nx2xSxS``, head-A colours per size, head-B colours per size)."""

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (a scalar over every model) and take one AdamW step."""

    def drop(self, keep: list[int]) -> None:
        """Keep only the models at positions ``keep`` (the others have stopped)."""

    def state(self, j: int) -> dict[str, torch.Tensor]:
        """Model ``j``'s weights as a GloperNet state dict on CPU (BatchNorm statistics may be absent)."""

    def optimizer_state(self, j: int) -> OptimizerState:
        """Model ``j``'s AdamW state by GloperNet parameter name (on the device)."""


def new_net(local_size: int, seed: int, state: Mapping[str, torch.Tensor] | None) -> GloperNet:
    """A GloperNet seeded like the authors' loop, optionally warm-started from ``state``."""
    torch.manual_seed(seed)
    net = GloperNet(local_size)
    if state is not None:
        missing, unexpected = net.load_state_dict(dict(state), strict=False)
        wrong = list(unexpected) + [k for k in missing if not k.endswith(_BN_STATS)]
        if wrong:
            raise InvalidParameterError(
                f"the initial state does not fit GloperNet (keys {', '.join(sorted(wrong)[:5])} ...): "
                "pass a state dict saved from a GloperNet (model.state_dict())")
    return net


def _compiled(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
    if mode == "off":
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode)  # type: ignore[return-value]


class SeparateModels:
    """One model (``sizes`` has one entry), trained as the authors do."""

    def __init__(self, sizes: Sequence[int], options: EngineOptions, device: torch.device,
                 states: Sequence[Mapping[str, torch.Tensor] | None],
                 optimizer_states: Sequence[OptimizerState | None] | None = None) -> None:
        if len(sizes) != 1:
            raise ValueError("SeparateModels holds exactly one local size")
        self.sizes = list(sizes)
        self.net = new_net(sizes[0], options.seed, states[0]).to(device)
        if options.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net.train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=options.lr)
        if optimizer_states and optimizer_states[0]:
            for name, param in self.net.named_parameters():
                self.opt.state[param] = {k: v.clone() for k, v in optimizer_states[0][name].items()}
        self._cuda_graphs = options.compile == "reduce-overhead"
        self._fn = _compiled(self.net, options.compile)

    def forward(self, image: torch.Tensor) -> Outputs:
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        logits, cen_a, cen_b = self._fn(image)
        return logits, [cen_a], [cen_b]

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def drop(self, keep: list[int]) -> None:
        if keep != [0]:
            raise ValueError("a single model cannot drop itself; stop training instead")

    def state(self, j: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def optimizer_state(self, j: int) -> OptimizerState:
        return {name: {k: v.clone() for k, v in self.opt.state[p].items()}
                for name, p in self.net.named_parameters() if p in self.opt.state}


class _Features(nn.Module):
    """A GloperNet whose forward is its UNet without heads (what ``vmap`` runs)."""

    def __init__(self, net: GloperNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.features(x)


class StackedModels:
    """Every local size's model stacked along a leading dim, their UNets run by one ``vmap``.

    A stacked convolution is a grouped convolution: one kernel launch per layer for
    all sizes. The centroid heads (their pooling window differs) run per size.
    """

    def __init__(self, sizes: Sequence[int], options: EngineOptions, device: torch.device,
                 states: Sequence[Mapping[str, torch.Tensor] | None],
                 optimizer_states: Sequence[OptimizerState | None] | None = None) -> None:
        self.sizes = list(sizes)
        self.lr = options.lr
        self.device = device
        nets = []
        for ls, st in zip(sizes, states, strict=True):
            net = new_net(ls, options.seed, st)
            replace_all_batch_norm_modules_(net)  # batch statistics only, no running buffers
            nets.append(_Features(net).to(device))
        params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
        self.params: dict[str, torch.Tensor] = dict(params)
        self.buffers: dict[str, torch.Tensor] = dict(buffers)
        self.opt = torch.optim.AdamW(list(self.params.values()), lr=options.lr)
        if optimizer_states and all(optimizer_states):
            for key, param in self.params.items():
                per_model = [st[key.removeprefix("net.")] for st in optimizer_states if st]
                self.opt.state[param] = {
                    "step": per_model[0]["step"].clone(),
                    "exp_avg": torch.stack([st["exp_avg"] for st in per_model]).to(device),
                    "exp_avg_sq": torch.stack([st["exp_avg_sq"] for st in per_model]).to(device)}
        base = copy.deepcopy(nets[0]).to("meta")

        def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
            return functional_call(base, (p, b), (x,))

        self._cuda_graphs = options.compile == "reduce-overhead"
        self._fn = _compiled(vmap(call, in_dims=(0, 0, None)), options.compile)

    def forward(self, image: torch.Tensor) -> Outputs:
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        logits, x0, x1 = self._fn(self.params, self.buffers, image)  # N x 1 x C x H x W each
        p = self.params
        cen_a = [centroid_colours(x0[j], p["net.head_a.weight"][j], p["net.head_a.bias"][j], ls)
                 for j, ls in enumerate(self.sizes)]
        cen_b = [centroid_colours(x1[j], p["net.head_b.weight"][j], p["net.head_b.bias"][j], ls)
                 for j, ls in enumerate(self.sizes)]
        return logits[:, 0], cen_a, cen_b

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def drop(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, device=self.device)
        old = self.params
        self.params = {k: v.detach()[idx].clone().requires_grad_(True) for k, v in old.items()}
        self.buffers = {k: v[idx].clone() for k, v in self.buffers.items()}
        opt = torch.optim.AdamW(list(self.params.values()), lr=self.lr)
        for k, new in self.params.items():
            st = self.opt.state.get(old[k])
            if st:
                opt.state[new] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"][idx].clone(),
                                  "exp_avg_sq": st["exp_avg_sq"][idx].clone()}
        self.opt = opt
        self.sizes = [self.sizes[j] for j in keep]

    def optimizer_state(self, j: int) -> OptimizerState:
        return {k.removeprefix("net."): {"step": st["step"].clone(), "exp_avg": st["exp_avg"][j].clone(),
                                         "exp_avg_sq": st["exp_avg_sq"][j].clone()}
                for k, p in self.params.items() if (st := self.opt.state.get(p))}

    def state(self, j: int) -> dict[str, torch.Tensor]:
        out = {k.removeprefix("net."): v[j].detach().cpu().clone() for k, v in self.params.items()}
        out.update({k.removeprefix("net."): v[j].detach().cpu().clone() for k, v in self.buffers.items()})
        return out
