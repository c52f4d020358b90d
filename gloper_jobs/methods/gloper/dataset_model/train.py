"""Training a dataset-level GloPER model (:mod:`gloper_jobs.methods.gloper.dataset_model`).

No labels: GloPER's one training loop and loss (:mod:`gloper_jobs.methods.gloper.engine`), on batches of photos with their
foreground masks, randomly flipped and cropped. Every ``checkpoint_every`` steps the
model, the optimiser and the loss curve are written atomically; training started
again with the same output resumes from the last checkpoint. The photo order and the
random draws of step ``s`` depend only on the seed and ``s``, so a resumed run follows
the same curve as one that was never interrupted (exactly, on CPU).

Several GPUs or nodes: launch the same command with ``torchrun`` (``torchrun
--nproc_per_node=4 -m gloper_jobs.cli train DATASET --out m.pt``). Each process
then joins the ``torch.distributed`` group torchrun describes in its environment,
wraps the network in ``DistributedDataParallel`` (NCCL on CUDA, Gloo on CPU), trains
on its own shard of the photos (``DistributedSampler``) with ``batch`` photos per
process, and only rank 0 writes checkpoints and shows the progress bar.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from gloper_jobs.data.images import load_image, resize_mask, resize_rgb_uint8
from gloper_jobs.exceptions import DatasetError, GloperError
from gloper_jobs.methods.gloper.dataset_model.checkpoint import load_checkpoint, save_checkpoint
from gloper_jobs.methods.gloper.engine import Batch, train_loop
from gloper_jobs.methods.gloper.models import OneNetwork
from gloper_jobs.methods.gloper.net import GloperNet
from gloper_jobs.methods.gloper.params import DatasetModelParams

#: ``HxWx3 uint8 RGB`` -> an object with ``mask`` (``HxW bool``), like ForegroundExtractor
ForegroundFn = Callable[[np.ndarray], Any]
#: called after each checkpoint is written: (path, step, loss curve so far, seconds so far, photos)
CheckpointHook = Callable[[Path, int, list[float], float, int], None]


class TrainingPhotos(Protocol):
    """What :func:`train_model` draws from: ``len()`` photos, ``take(idx)`` gives photos ``idx``
    as ``Bx3xSxS uint8`` RGB and ``BxSxS bool`` foreground, ``skipped`` lists ``(path, reason)``
    of those that could not be read (:class:`LazyPhotos`; the tests hold small sets in memory)."""

    skipped: list[tuple[str, str]]

    def __len__(self) -> int: ...

    def take(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...


class LazyPhotos:
    """An archive's photos, each loaded, masked and resized to ``size x size`` when a
    training step first draws it, what :func:`train_model` trains ``gloper train`` on.

    Training draws ``steps x batch`` photos (1,200 with the defaults), so on an archive of
    10^5 photos it sees about 1 % of them: preparing every photo first (a u2netp pass
    each, hours on a CPU) and holding them all (26 GB at S=256) would be spent on photos
    no step draws. The draws stay the seeded ones of :func:`_batch_indices` over every
    listed photo. A photo that cannot be read is listed in ``skipped`` and its draws go
    to the next readable one (the same on every run); when none can be read the step
    raises :class:`DatasetError`. The last ``keep`` prepared photos stay in memory (about
    260 KB each at S=256); one drawn again after that is prepared again.
    """

    def __init__(self, paths: Sequence[Path], size: int, foreground_fn: ForegroundFn | None,
                 max_pixels: int | None = None, keep: int = 4096) -> None:
        if not paths:
            raise DatasetError("no photos to train on")
        self.paths = [str(p) for p in paths]
        self.size, self.foreground_fn, self.max_pixels, self.keep = size, foreground_fn, max_pixels, keep
        self.skipped: list[tuple[str, str]] = []
        self.prepared = 0  # photos prepared so far (a photo prepared again counts again)
        self._bad: set[int] = set()
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos ``idx``: ``Bx3xSxS uint8`` and ``BxSxS bool``."""
        pairs = [self._photo(i) for i in idx]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def _photo(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        for k in range(len(self)):
            i = (index + k) % len(self)
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
            if i in self._bad:
                continue
            try:
                image = load_image(self.paths[i], self.max_pixels) if self.max_pixels else load_image(self.paths[i])
            except GloperError as exc:
                self._bad.add(i)
                self.skipped.append((self.paths[i], str(exc)))
                continue
            self._cache[i] = prepared_photo(image, self.size, self.foreground_fn)
            self.prepared += 1
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
            return self._cache[i]
        raise DatasetError(f"none of the {len(self)} photos could be read: {self.skipped[:3]}")


def prepared_photo(image: np.ndarray, size: int, foreground_fn: ForegroundFn | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``HxWx3 uint8 RGB`` -> ``3xSxS uint8`` and its foreground ``SxS bool``."""
    fg = foreground_fn(image).mask if foreground_fn is not None else np.ones(image.shape[:2], dtype=bool)
    return (torch.from_numpy(resize_rgb_uint8(image, (size, size)).copy()).permute(2, 0, 1).contiguous(),
            torch.from_numpy(resize_mask(fg, (size, size))))


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` launch (``world == 1``: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Join the process group torchrun set up in the environment, if there is one."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun for each process
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, asked: torch.device) -> torch.device:
        """The CUDA card of this local rank under torchrun, else ``asked``."""
        if self.world > 1 and asked.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return asked

    def close(self) -> None:
        """Leave the process group (after training under torchrun)."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def mean(self, value: torch.Tensor) -> float:
        """``value`` averaged over the processes (itself when single)."""
        if self.world > 1:
            import torch.distributed as dist

            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return float(value.detach())


@dataclass
class TrainResult:
    """What a training run did: final step, the whole loss curve, its own seconds and photos/s."""

    path: Path
    step: int
    start_step: int
    losses: list[float]
    seconds: float
    photos_per_second: float
    photos: int
    device: str
    #: ``(path, reason)`` of photos that could not be read (their draws went to others)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _batch_indices(sampler: DistributedSampler[int], step: int, batch: int, cache: dict[int, list[int]]) -> list[int]:
    """This process's photo indices of ``step``: a stream of seeded per-epoch shuffles, cut in batches."""
    per_epoch = len(sampler)
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, offset = divmod(pos, per_epoch)
        if epoch not in cache:
            sampler.set_epoch(epoch)
            cache.clear()
            cache[epoch] = list(iter(sampler))
        out.append(cache[epoch][offset])
    return out


def augment(images: torch.Tensor, foreground: torch.Tensor, crop: int,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal/vertical flips and a random ``crop x crop`` window per photo.

    ``images``: ``Bx3xSxS uint8``; ``foreground``: ``BxSxS bool``. Returns ``Bx3xCxC float32``
    in [0, 1] and ``BxCxC float32``.
    """
    b, _, s, _ = images.shape
    flips = torch.rand(b, 2, generator=generator) < 0.5
    offsets = torch.randint(0, s - crop + 1, (b, 2), generator=generator)
    out_i, out_f = [], []
    for k in range(b):
        y, x = int(offsets[k, 0]), int(offsets[k, 1])
        img = images[k, :, y:y + crop, x:x + crop]
        fg = foreground[k, y:y + crop, x:x + crop]
        dims = [d for d, flip in zip((2, 1), flips[k].tolist(), strict=True) if flip]
        if dims:
            img, fg = img.flip(dims), fg.flip([d - 1 for d in dims])
        out_i.append(img)
        out_f.append(fg)
    return torch.stack(out_i).float() / 255.0, torch.stack(out_f).float()


def train_model(photos: TrainingPhotos, params: DatasetModelParams, out: Path, *, dataset: str,
                device: torch.device, progress: bool = True, on_checkpoint: CheckpointHook | None = None,
                on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume training of) the model at ``out`` up to ``params.steps`` steps.

    When ``out`` holds a checkpoint with the same settings (``steps`` may differ) on the
    same ``dataset``, training continues from its step, optimiser and loss curve;
    other settings are refused (:class:`ModelSettingsError`), a bad file is a
    :class:`ModelCheckpointError`. Checkpoints every ``params.checkpoint_every`` steps
    and at the end. ``on_step(step, loss)`` runs after every step (an exception there
    stops training, as a killed process would, after the last checkpoint).
    """
    from tqdm import tqdm

    ddp = Distributed.from_env()
    device = ddp.device(device)
    settings = params.identity()
    torch.manual_seed(params.seed)  # the initial weights (a resumed run loads its own)
    net = GloperNet(params.local_sizes).to(device)
    module: torch.nn.Module = net
    if ddp.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    models = OneNetwork(net, params.lr, module=module)
    start, losses, seconds_before = 0, [], 0.0
    if Path(out).exists():
        ck = load_checkpoint(out)
        ck.check_resumable(settings, dataset)
        net.load_state_dict(ck.state_dict)
        if ck.optimizer is not None:
            models.opt.load_state_dict(ck.optimizer)
        start, losses, seconds_before = ck.step, list(ck.losses), ck.seconds
    net.train()
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(photos)), num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=params.seed)  # type: ignore[arg-type]
    epochs: dict[int, list[int]] = {}
    crop = params.crop_size
    per_step = params.batch * ddp.world

    def checkpoint(step: int, elapsed: float) -> None:
        if ddp.rank != 0:
            return
        save_checkpoint(out, {"settings": settings, "dataset": dataset, "photos": len(photos), "step": step,
                              "losses": losses, "seconds": elapsed, "state_dict": net.state_dict(),
                              "optimizer": models.opt.state_dict()})
        if on_checkpoint is not None:
            on_checkpoint(Path(out), step, list(losses), elapsed, len(photos))

    def batch(step: int) -> Batch:
        """Step ``step``'s crops: the photo order and draws depend only on the seed and the step."""
        gen = torch.Generator().manual_seed(params.seed * 1_000_003 + step * ddp.world + ddp.rank)
        idx = _batch_indices(sampler, step, params.batch, epochs)
        images, fg = augment(*photos.take(idx), crop, gen)
        gumbel = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        return Batch(images.to(device), fg.to(device), gumbel)

    bar = tqdm(total=params.steps, initial=start, desc=f"training {Path(out).name}", unit="step",
               disable=not progress or ddp.rank != 0, dynamic_ncols=True)
    t0 = time.perf_counter()
    done = start

    def after_step(step: int, per_size: dict[int, torch.Tensor], total: torch.Tensor) -> None:
        nonlocal done
        done = step
        losses.append(round(ddp.mean(total), 6))
        elapsed = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", photos_s=f"{(step - start) * per_step / elapsed:.1f}",
                        refresh=False)
        if step % params.checkpoint_every == 0 or step == params.steps:
            checkpoint(step, seconds_before + elapsed)
        if on_step is not None:
            on_step(step, losses[-1])

    try:
        train_loop(models, batch, steps=params.steps, tau=params.tau, device=device, start=start,
                   after_step=after_step)
    except KeyboardInterrupt:  # Ctrl-C keeps the steps done since the last checkpoint
        if len(losses) == done and done > start:
            checkpoint(done, seconds_before + time.perf_counter() - t0)
        raise
    finally:
        bar.close()
        ddp.close()
    elapsed = time.perf_counter() - t0
    taken = done - start
    return TrainResult(Path(out), done, start, losses, seconds_before + elapsed,
                       taken * per_step / elapsed if taken and elapsed > 0 else 0.0, len(photos), str(device),
                       list(photos.skipped))
