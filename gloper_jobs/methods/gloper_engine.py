"""GloPER's training engine: every local size of one photo, with early stopping.

:func:`train_sizes` trains one :class:`~gloper_jobs.methods.gloper_model.GloperNet`
per local size on one image and returns, per size, the pattern weight map of
head A, the losses and the step it stopped at. What it adds to the authors' loop:

- **early stop** (``stop_every`` = k > 0): the mask ``weight > rho`` (in the
  foreground) is read out every k steps and training stops when its IoU with the
  previous read-out exceeds ``stop_iou``, or at ``steps``. The read-out costs
  nothing: the forward pass of the next step is the model as it is now (BatchNorm
  uses batch statistics in training and read-out alike), so its head-A colours
  give the same mask a separate read-out would.
- **all sizes in one pass** (``batched``): the models are stacked
  (``torch.func.stack_module_state``) and their UNets run under ``vmap``; only the
  pooling of the centroid heads differs per size. BatchNorm keeps no running
  statistics there (they are never used: the read-out uses batch statistics).
- **precision and kernels**: ``bf16`` autocast or TF32 for the UNet,
  ``channels_last``, ``torch.compile`` (``reduce-overhead`` adds CUDA graphs).
- **size chain** (``chain_sizes``), coarse to fine: the largest local size trains from
  scratch (it settles soonest); every other size starts from its settled weights and,
  warm, usually settles within a read-out or two. The sizes' masks differ little, so
  most of their separate training is the same work done again (bench/gloper_speed.py
  measures the Dice cost against the plain loop). Only with early stop: without it
  (``stop_every=0``) the chain would save nothing.
- **warm start**: ``initial_state`` (one state dict for every size, e.g. a
  dataset-level model's) or ``initial_states`` (per local size, e.g. the previous
  photo's, from ``keep_state=True``). A warm model's first read-out is at step 0, so
  one that is already settled stops after ``stop_every`` steps.

Same seed, same sizes: every size starts from the same initial weights and draws
the same Gumbel noise, in separate and in batched training alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.gloper_model import hard_gumbel_from_uniform, pattern_weight, reconstruct
from gloper_jobs.methods.gloper_stack import ModelSet, OptimizerState, SeparateModels, StackedModels

StateDict = Mapping[str, torch.Tensor]

PRECISIONS = ("fp32", "tf32", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class EngineOptions:
    """How :func:`train_sizes` trains; the first block is the method, the rest the engine.

    ``stop_every`` = 0 runs every one of ``steps`` steps (the authors' loop).
    """

    steps: int = 25
    tau: float = 0.1
    lr: float = 1e-3
    seed: int = 41
    rho: float = 0.5
    stop_every: int = 0
    stop_iou: float = 0.995
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "off"
    batched: bool = False
    chain_sizes: bool = False

    def __post_init__(self) -> None:
        if self.stop_every < 0:
            raise InvalidParameterError(f"stop_every={self.stop_every} must be >= 0 (0: no early stop)")
        if not 0 < self.stop_iou <= 1:
            raise InvalidParameterError(f"stop_iou={self.stop_iou} must be in (0, 1]")
        if self.precision not in PRECISIONS:
            raise InvalidParameterError(f"precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.compile not in COMPILE_MODES:
            raise InvalidParameterError(f"compile={self.compile!r}: use one of {', '.join(COMPILE_MODES)}")

    def to_info(self) -> dict[str, Any]:
        """JSON-ready, for ``Segmentation.info``."""
        return asdict(self)


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


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two ``SxS bool`` masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


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


def train_sizes(
    image: torch.Tensor,
    foreground: torch.Tensor,
    local_sizes: Sequence[int],
    options: EngineOptions,
    device: torch.device,
    *,
    initial_state: StateDict | None = None,
    initial_states: Mapping[int, StateDict] | None = None,
    readout_steps: Sequence[int] = (),
    keep_state: bool = False,
) -> dict[int, SizeResult]:
    """Train a model per local size on one image; return each size's :class:`SizeResult`.

    ``image``: ``1x3xSxS float32`` in [0, 1] on ``device``; ``foreground``: ``1xSxS
    float32`` (1 = animal) on ``device``. Deterministic for a fixed seed on CPU;
    batched training equals separate training up to float rounding.
    """
    image = image.contiguous(memory_format=torch.channels_last) if options.channels_last else image
    fg_mask = foreground[0] > 0.5
    results: dict[int, SizeResult] = {}

    donor_optimizer: OptimizerState | None = None

    def start(sizes: Sequence[int]) -> ModelSet:
        states = [initial_states[ls] if initial_states and ls in initial_states else initial_state for ls in sizes]
        cls = StackedModels if options.batched and len(sizes) > 1 else SeparateModels
        return cls(list(sizes), options, device, states, [donor_optimizer] * len(sizes))

    warm = initial_state is not None or bool(initial_states)
    sizes_left = list(local_sizes)
    if options.chain_sizes and options.stop_every > 0 and len(sizes_left) > 1 and not warm:
        first = max(sizes_left)
        sizes_left.remove(first)
        head = _fit(start([first]), image, foreground, fg_mask, options, device, set(readout_steps),
                    keep_state=True, warm=False)
        # The smaller sizes go on from the largest's weights and AdamW state (fresh moments
        # would make their first steps full-size ones and unsettle the mask).
        initial_state, donor_optimizer, warm = head[first].state, head[first].optimizer_state, True
        if not keep_state:
            head[first].state = head[first].optimizer_state = None
        results.update(head)
    groups = [sizes_left] if options.batched else [[ls] for ls in sizes_left]
    for sizes in groups:
        models = start(sizes)
        results.update(_fit(models, image, foreground, fg_mask, options, device, set(readout_steps),
                            keep_state, warm))
    return {ls: results[ls] for ls in local_sizes}


def _fit(models: ModelSet, image: torch.Tensor, foreground: torch.Tensor, fg_mask: torch.Tensor,
         options: EngineOptions, device: torch.device, readout_steps: set[int],
         keep_state: bool, warm: bool) -> dict[int, SizeResult]:
    """The training loop over the models still running; see :func:`train_sizes`.

    ``warm``: the models start from trained weights, so step 0 is read out too.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(options.seed)
    losses: dict[int, list[torch.Tensor]] = {ls: [] for ls in models.sizes}
    previous: dict[int, torch.Tensor] = {}
    snapshots: dict[int, dict[int, torch.Tensor]] = {ls: {} for ls in models.sizes}
    done: dict[int, SizeResult] = {}
    k = options.stop_every
    for step in range(options.steps + 1):
        last = step == options.steps
        check = k > 0 and step % k == 0 and (step > 0 or warm) and not last
        grad = torch.enable_grad() if not last else torch.no_grad()
        with grad, precision_context(options.precision, device):
            logits, cen_a, cen_b = models.forward(image)
        stopped: list[int] = []
        for j, ls in enumerate(models.sizes):
            if not (last or check or step in readout_steps):
                continue
            weight = pattern_weight(image, cen_a[j].detach().float(), ls)[0]
            if step in readout_steps and not last:
                snapshots[ls][step] = weight.cpu()
            if check:
                mask = (weight > options.rho) & fg_mask
                if ls in previous and mask_iou(previous[ls], mask) > options.stop_iou:
                    stopped.append(j)
                previous[ls] = mask
            if last or j in stopped:
                snapshots[ls][step] = weight.cpu()
                done[ls] = SizeResult(
                    weight.cpu(), [float(v) for v in torch.stack(losses[ls]).tolist()] if losses[ls] else [],
                    step, snapshots[ls], models.state(j) if keep_state else None,
                    models.optimizer_state(j) if keep_state else None)
        if last:
            break
        running = [j for j in range(len(models.sizes)) if j not in stopped]
        if not running:
            break
        u = torch.rand((1, *logits.shape[1:]), generator=gen, device=device, dtype=torch.float32)
        per_size = []
        for j in running:
            ls = models.sizes[j]
            assign = hard_gumbel_from_uniform(logits[j : j + 1].float(), options.tau, u)
            rec_a = reconstruct(assign, cen_a[j].float(), ls)
            rec_b = reconstruct(assign, cen_b[j].float(), 2 * ls)
            loss = (torch.linalg.vector_norm(image - rec_a, dim=1) * foreground).mean() + (
                torch.linalg.vector_norm(image - rec_b, dim=1) * foreground
            ).mean()
            per_size.append(loss)
            losses[ls].append(loss.detach())
        # A stopped model in a stack gets a zero gradient this step; it leaves the stack after.
        models.step(torch.stack(per_size).sum())
        if stopped:
            models.drop(running)
    return done
