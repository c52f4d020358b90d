"""The networks the training loop steps: one network, or one-size networks stacked under ``vmap``.

Both are a :class:`ModelSet`: for the ``N`` local sizes they hold, ``forward`` gives
per size ``(logits Bx2xHxW, head-A colours Bx2x3x(H/l)x(W/l), head-B colours
Bx2x3x(H/2l)x(W/2l))`` (:mod:`gloper_jobs.methods.gloper.net`), and ``step`` takes one
AdamW step on a loss over all of them.

- :class:`OneNetwork`: one :class:`~gloper_jobs.methods.gloper.net.GloperNet` with one
  head set (the authors' per-photo, per-size model) or several (the dataset model,
  also under ``DistributedDataParallel``; its per-photo fine-tune).
- :class:`StackedModels`: several one-size networks as one grouped network: their
  UNets run in one ``vmap`` (one kernel launch per layer for all sizes), their
  centroid heads (the pooling window differs) per size.

Every one-size network of one seed starts from the same weights, as separate seeded
networks do.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.gloper.net import GloperNet, HeadOutputs, centroid_colours

#: AdamW's state per GloperNet parameter name ({"step", "exp_avg", "exp_avg_sq"} tensors)
OptimizerState = dict[str, dict[str, torch.Tensor]]
StateDict = Mapping[str, torch.Tensor]
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


class ModelSet(Protocol):
    """The networks of the local sizes still training (``sizes``, in order)."""

    sizes: list[int]

    def forward(self, images: torch.Tensor) -> list[HeadOutputs]:
        """``images`` ``Bx3xHxW`` -> per size in ``sizes`` order ``(logits, centroids_a, centroids_b)``."""

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (a scalar over every size) and take one AdamW step."""

    def drop(self, keep: list[int]) -> None:
        """Keep only the sizes at positions ``keep`` (the others have stopped)."""

    def state(self, j: int) -> dict[str, torch.Tensor]:
        """Size ``j``'s one-size network as a state dict on CPU (BatchNorm statistics may be absent)."""

    def optimizer_state(self, j: int) -> OptimizerState:
        """Size ``j``'s AdamW state by parameter name (on the device)."""


#: guards torch's global generator while a network draws its seeded initial weights
_SEEDED = threading.Lock()


def new_net(local_size: int, seed: int, state: StateDict | None) -> GloperNet:
    """A one-size GloperNet seeded like the authors' loop, optionally warm-started from ``state``.

    The initial weights come from torch's global generator: seeding and drawing hold a
    lock, so photos trained in several threads at once (the embedded run) each get the
    seed's weights."""
    with _SEEDED:
        torch.manual_seed(seed)
        net = GloperNet((local_size,))
    if state is not None:
        missing, unexpected = net.load_state_dict(dict(state), strict=False)
        wrong = list(unexpected) + [k for k in missing if not k.endswith(_BN_STATS)]
        if wrong:
            raise InvalidParameterError(
                f"the initial state does not fit GloperNet (keys {', '.join(sorted(wrong)[:5])} ...): "
                "pass a state dict saved from a one-size GloperNet (model.state_dict())")
    return net


def compiled(fn: Callable[..., Any], mode: str) -> Callable[..., Any]:
    """``torch.compile(fn)`` in ``mode`` (``off``: ``fn`` itself)."""
    if mode == "off":
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode)  # type: ignore[return-value]


class OneNetwork:
    """One GloperNet (any number of head sets) and its AdamW optimiser.

    ``module`` is what runs the forward pass (the network itself, a
    ``DistributedDataParallel`` wrapper of it, or a compiled version); ``net`` is the
    network whose weights are stepped and saved.
    """

    def __init__(self, net: GloperNet, lr: float, *, compile: str = "off", channels_last: bool = False,
                 optimizer_state: OptimizerState | None = None, module: nn.Module | None = None) -> None:
        self.net = net
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net.train()
        self.sizes = list(net.local_sizes)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr)
        if optimizer_state:
            for name, param in self.net.named_parameters():
                self.opt.state[param] = {k: v.clone() for k, v in optimizer_state[name].items()}
        self._cuda_graphs = compile == "reduce-overhead"
        self._fn = compiled(module if module is not None else self.net, compile)

    def forward(self, images: torch.Tensor) -> list[HeadOutputs]:
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = self._fn(images)
        return [out[ls] for ls in self.sizes]

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def drop(self, keep: list[int]) -> None:
        if keep != list(range(len(self.sizes))):
            raise ValueError("one network's head sets share its trunk: they stop together")

    def state(self, j: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def optimizer_state(self, j: int) -> OptimizerState:
        return {name: {k: v.clone() for k, v in self.opt.state[p].items()}
                for name, p in self.net.named_parameters() if p in self.opt.state}


class _Features(nn.Module):
    """A one-size GloperNet whose forward is its UNet and logits without the centroid heads
    (what ``vmap`` runs)."""

    def __init__(self, net: GloperNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.features(x)


class StackedModels:
    """Every local size's one-size network stacked along a leading dim, their UNets run by one ``vmap``.

    A stacked convolution is a grouped convolution: one kernel launch per layer for
    all sizes. BatchNorm keeps no running statistics here (the read-out during training
    uses batch statistics).
    """

    def __init__(self, sizes: Sequence[int], lr: float, seed: int, device: torch.device,
                 states: Sequence[StateDict | None], optimizer_states: Sequence[OptimizerState | None],
                 compile: str = "off") -> None:
        self.sizes = list(sizes)
        self.lr = lr
        self.device = device
        nets = []
        for ls, st in zip(sizes, states, strict=True):
            net = new_net(ls, seed, st)
            replace_all_batch_norm_modules_(net)  # batch statistics only, no running buffers
            nets.append(_Features(net).to(device))
        params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
        self.params: dict[str, torch.Tensor] = dict(params)
        self.buffers: dict[str, torch.Tensor] = dict(buffers)
        self.opt = torch.optim.AdamW(list(self.params.values()), lr=lr)
        if all(optimizer_states):
            for key, param in self.params.items():
                per_model = [st[key.removeprefix("net.")] for st in optimizer_states if st]
                self.opt.state[param] = {
                    "step": per_model[0]["step"].clone(),
                    "exp_avg": torch.stack([st["exp_avg"] for st in per_model]).to(device),
                    "exp_avg_sq": torch.stack([st["exp_avg_sq"] for st in per_model]).to(device)}
        base = copy.deepcopy(nets[0]).to("meta")

        def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
            return functional_call(base, (p, b), (x,))

        self._cuda_graphs = compile == "reduce-overhead"
        self._fn = compiled(vmap(call, in_dims=(0, 0, None)), compile)

    def forward(self, images: torch.Tensor) -> list[HeadOutputs]:
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        logits, x0, x1 = self._fn(self.params, self.buffers, images)  # N x B x C x H x W each
        p = self.params
        return [(logits[j], centroid_colours(x0[j], p["net.head_a.0.weight"][j], p["net.head_a.0.bias"][j], ls),
                 centroid_colours(x1[j], p["net.head_b.0.weight"][j], p["net.head_b.0.bias"][j], ls))
                for j, ls in enumerate(self.sizes)]

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
