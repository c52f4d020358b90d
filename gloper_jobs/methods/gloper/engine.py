"""GloPER's one training loop, and the per-photo engine built on it.

:func:`train_loop` steps a :class:`~gloper_jobs.methods.gloper.models.ModelSet` on the
batches it is given with the one loss (:func:`~gloper_jobs.methods.gloper.loss.reconstruction_loss`
on a hard Gumbel-softmax sample), until a stop rule or the step budget ends it. Its
callers differ only in their data and their stop rule:

- per photo (:func:`train_sizes`): the same photo every step, one network per local
  size (or all sizes stacked), read out and stopped early by :class:`_EarlyStop`;
- the dataset model (:mod:`gloper_jobs.methods.gloper.dataset_model.train`): augmented
  crops of many photos, one network with a head set per size, checkpoints after steps;
- its per-photo fine-tune (:mod:`gloper_jobs.methods.gloper.dataset_model.extract`);
- the bench's plain loop (``bench/gloper_speed.py``): :func:`train_sizes` with every
  engine option off (:meth:`EngineOptions.plain`), the authors' algorithm.

What :func:`train_sizes` adds to the authors' loop:

- **early stop** (``stop_every`` = k > 0): the mask ``weight > rho`` (in the foreground)
  is read out every k steps and training stops when its IoU with the previous read-out
  exceeds ``stop_iou``, or at ``steps``. The read-out costs nothing: the forward pass of
  the next step is the model as it is now (BatchNorm uses batch statistics in training
  and read-out alike).
- **all sizes in one pass** (``batched``): the one-size networks are stacked and their
  UNets run under ``vmap`` (:class:`~gloper_jobs.methods.gloper.models.StackedModels`).
- **precision and kernels**: ``bf16`` autocast or TF32 for the UNet, ``channels_last``,
  ``torch.compile`` (``reduce-overhead`` adds CUDA graphs).
- **size chain** (``chain_sizes``), coarse to fine: the largest local size trains from
  scratch; every other size starts from its settled weights and AdamW state and is read
  out at step 0 too, so a warm model that is already settled stops at step k. Only with
  early stop.
- **warm start**: ``initial_state``, one state dict for every size (a one-size network's).

Same seed, same sizes: every size starts from the same initial weights and draws the
same Gumbel noise, in separate and in batched training alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from gloper_jobs.methods.gloper.loss import hard_gumbel_from_uniform, reconstruction_loss
from gloper_jobs.methods.gloper.models import (
    ModelSet,
    OneNetwork,
    OptimizerState,
    StackedModels,
    StateDict,
    new_net,
)
from gloper_jobs.methods.gloper.net import HeadOutputs, pattern_weight
from gloper_jobs.methods.gloper.params import EngineOptions
from gloper_jobs.scoring.metrics import iou


@dataclass
class Batch:
    """One step's data: ``images`` ``Bx3xHxW float32`` in [0, 1], ``foreground`` ``BxHxW
    float32`` (1 = animal), and the generator of the step's Gumbel draws (on the device)."""

    images: torch.Tensor
    foreground: torch.Tensor
    generator: torch.Generator


#: ``(step, images, outputs per size, last)`` -> positions (in ``models.sizes``) that stop now.
#: Called before every step's update, and once more after the last step (``last``, no gradient).
StopRule = Callable[[int, torch.Tensor, list[HeadOutputs], bool], list[int]]
#: ``(steps done, loss per running size, their sum)`` after each update
AfterStep = Callable[[int, dict[int, torch.Tensor], torch.Tensor], None]


def train_loop(models: ModelSet, batch: Callable[[int], Batch], *, steps: int, tau: float,
               device: torch.device, precision: str = "fp32", start: int = 0,
               stop: StopRule | None = None, after_step: AfterStep | None = None) -> None:
    """GloPER's training loop: steps ``start`` .. ``steps - 1`` of ``models`` on ``batch(step)``.

    Each step: forward pass, the stop rule (which may read the outputs out and stop
    sizes), one shared uniform draw for the Gumbel samples of every size, the loss summed
    over the running sizes, one AdamW step. With a stop rule, one more forward pass
    without gradient after the last step lets it read the final models out.
    """
    for step in range(start, steps + 1):
        last = step == steps
        if last and stop is None:
            break
        data = batch(step)
        grad = torch.enable_grad() if not last else torch.no_grad()
        with grad, precision_context(precision, device):
            outputs = models.forward(data.images)
        stopped = stop(step, data.images, outputs, last) if stop is not None else []
        if last:
            break
        running = [j for j in range(len(models.sizes)) if j not in stopped]
        if not running:
            break
        logits = outputs[0][0]
        u = torch.rand((logits.shape[0], *logits.shape[1:]), generator=data.generator, device=device,
                       dtype=torch.float32)
        per_size = {}
        for j in running:
            lg, cen_a, cen_b = outputs[j]
            assign = hard_gumbel_from_uniform(lg.float(), tau, u)
            per_size[models.sizes[j]] = reconstruction_loss(data.images, data.foreground, assign, cen_a.float(),
                                                            cen_b.float(), models.sizes[j])
        # A stopped model in a stack gets a zero gradient this step; it leaves the stack after.
        total = torch.stack(list(per_size.values())).sum()
        models.step(total)
        if after_step is not None:
            after_step(step + 1, per_size, total)
        if stopped:
            models.drop(running)


@dataclass
class SizeResult:
    """One local size's outcome.

    ``weight``: ``SxS float32`` (CPU) pattern weights in [0, 1] of the final model;
    ``losses``: the loss of every step taken; ``stop_step``: the optimizer steps
    taken (``steps`` when it never settled); ``snapshots``: weight maps after the
    steps asked for in ``readout_steps``; ``state``: final weights and
    ``optimizer_state`` AdamW's state (``keep_state``).
    """

    weight: torch.Tensor
    losses: list[float]
    stop_step: int
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None
    optimizer_state: OptimizerState | None = None


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast (``bf16``) or TF32 matmuls/convolutions (``tf32``, CUDA) for the block;
    the global TF32 flags are restored afterwards."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if precision == "tf32" and device.type == "cuda":
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return
    yield


class _EarlyStop:
    """Per-photo GloPER's stop rule: read the mask out every ``stop_every`` steps (and at
    ``readout_steps``), stop a size when its IoU with the previous read-out exceeds
    ``stop_iou``; records each size's :class:`SizeResult`."""

    def __init__(self, models: ModelSet, foreground: torch.Tensor, options: EngineOptions,
                 readout_steps: set[int], keep_state: bool, warm: bool) -> None:
        self.models = models
        self.fg_mask = foreground[0] > 0.5
        self.p = options.params
        self.readout_steps = readout_steps
        self.keep_state = keep_state
        self.warm = warm
        self.losses: dict[int, list[torch.Tensor]] = {ls: [] for ls in models.sizes}
        self.previous: dict[int, torch.Tensor] = {}
        self.snapshots: dict[int, dict[int, torch.Tensor]] = {ls: {} for ls in models.sizes}
        self.done: dict[int, SizeResult] = {}

    def __call__(self, step: int, images: torch.Tensor, outputs: list[HeadOutputs], last: bool) -> list[int]:
        k = self.p.stop_every
        check = k > 0 and step % k == 0 and (step > 0 or self.warm) and not last
        stopped: list[int] = []
        for j, ls in enumerate(self.models.sizes):
            if not (last or check or step in self.readout_steps):
                continue
            weight = pattern_weight(images, outputs[j][1].detach().float(), ls)[0]
            if step in self.readout_steps and not last:
                self.snapshots[ls][step] = weight.cpu()
            if check:
                mask = (weight > self.p.rho) & self.fg_mask
                if ls in self.previous and iou(self.previous[ls], mask) > self.p.stop_iou:
                    stopped.append(j)
                self.previous[ls] = mask
            if last or j in stopped:
                self.snapshots[ls][step] = weight.cpu()
                losses = [float(v) for v in torch.stack(self.losses[ls]).tolist()] if self.losses[ls] else []
                self.done[ls] = SizeResult(
                    weight.cpu(), losses, step, self.snapshots[ls],
                    self.models.state(j) if self.keep_state else None,
                    self.models.optimizer_state(j) if self.keep_state else None)
        return stopped

    def record(self, step: int, per_size: dict[int, torch.Tensor], total: torch.Tensor) -> None:
        for ls, loss in per_size.items():
            self.losses[ls].append(loss.detach())


def train_sizes(
    image: torch.Tensor,
    foreground: torch.Tensor,
    local_sizes: Sequence[int],
    options: EngineOptions,
    device: torch.device,
    *,
    initial_state: StateDict | None = None,
    readout_steps: Sequence[int] = (),
    keep_state: bool = False,
) -> dict[int, SizeResult]:
    """Train a network per local size on one image; return each size's :class:`SizeResult`.

    ``image``: ``1x3xSxS float32`` in [0, 1] on ``device``; ``foreground``: ``1xSxS
    float32`` (1 = animal) on ``device``. Deterministic for a fixed seed on CPU;
    batched training equals separate training up to float rounding.
    """
    p = options.params
    image = image.contiguous(memory_format=torch.channels_last) if options.channels_last else image
    results: dict[int, SizeResult] = {}
    donor_optimizer: OptimizerState | None = None

    def start(sizes: Sequence[int]) -> ModelSet:
        if options.batched and len(sizes) > 1:
            return StackedModels(sizes, p.lr, p.seed, device, [initial_state] * len(sizes),
                                 [donor_optimizer] * len(sizes), p.compile)
        return OneNetwork(new_net(sizes[0], p.seed, initial_state).to(device), p.lr, compile=p.compile,
                          channels_last=options.channels_last, optimizer_state=donor_optimizer)

    def fit(models: ModelSet, keep: bool, warm: bool) -> dict[int, SizeResult]:
        gen = torch.Generator(device=device)
        gen.manual_seed(p.seed)
        rule = _EarlyStop(models, foreground, options, set(readout_steps), keep, warm)
        train_loop(models, lambda _step: Batch(image, foreground, gen), steps=p.steps, tau=p.tau, device=device,
                   precision=p.precision, stop=rule, after_step=rule.record)
        return rule.done

    warm = initial_state is not None
    sizes_left = list(local_sizes)
    if options.chain_sizes and p.stop_every > 0 and len(sizes_left) > 1 and not warm:
        first = max(sizes_left)
        sizes_left.remove(first)
        head = fit(start([first]), keep=True, warm=False)
        # The smaller sizes go on from the largest's weights and AdamW state (fresh moments
        # would make their first steps full-size ones and unsettle the mask).
        initial_state, donor_optimizer, warm = head[first].state, head[first].optimizer_state, True
        if not keep_state:
            head[first].state = head[first].optimizer_state = None
        results.update(head)
    groups = [sizes_left] if options.batched else [[ls] for ls in sizes_left]
    for sizes in groups:
        results.update(fit(start(sizes), keep_state, warm))
    return {ls: results[ls] for ls in local_sizes}
