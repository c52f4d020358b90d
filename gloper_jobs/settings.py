"""One typed settings object, built from the environment.

This is the only module that reads ``os.environ``. Every variable is prefixed
``GLOPER_`` except ``U2NET_HOME``, which rembg users already know, accepted as
a fallback for ``GLOPER_MODELS_DIR``.

=========================  =====================================================
variable                   meaning (default)
=========================  =====================================================
GLOPER_DATABASE_URL        SQLAlchemy URL of the result store
                           (``sqlite:///./gloper.db`` in the working folder)
GLOPER_RESULTS_DIR         where mask PNGs go (``./gloper-results``)
GLOPER_MODELS_DIR          foreground weights folder (``$U2NET_HOME`` or ``~/.u2net``)
GLOPER_FOREGROUND_MODEL    ``u2netp`` (default) or ``u2net`` (the paper's)
GLOPER_DEVICE              ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``
GLOPER_TORCH_THREADS       CPU threads for torch (all cores)
GLOPER_MAX_IMAGE_PIXELS    photos larger than this are refused (100,000,000)
GLOPER_EVAL_SIZE           side of the square Dice is computed at (256)
GLOPER_EXAMPLES_DIR        the shared example photos, for tests and benchmarks
GLOPER_SAM_CHECKPOINT      SAM weights: a ``sam_vit_*.pth`` file, or a folder holding
                           the published files (``sam_vit_h_4b8939.pth`` ...)
                           (unset: ``GLOPER_WEIGHTS_DIR``, then torch hub's cache)
GLOPER_CLIPSEG_WEIGHTS     CLIPSeg: a ``save_pretrained`` folder of
                           ``CIDAS/clipseg-rd64-refined``, or a Hugging Face hub
                           cache folder (unset: ``GLOPER_WEIGHTS_DIR`` as a hub
                           cache, then the Hugging Face default cache)
GLOPER_DINO_WEIGHTS        DINOv2: torch hub's ``dinov2_vitg14_reg4_pretrain.pth``
                           (or a folder holding it), a ``save_pretrained`` folder,
                           or a hub cache folder holding
                           ``facebook/dinov2-with-registers-giant``
                           (unset: ``GLOPER_WEIGHTS_DIR``, torch hub's cache, then
                           the Hugging Face caches as for CLIPSeg)
GLOPER_WEIGHTS_DIR         where downloads go and unset weights are looked for
                           (``~/.cache/gloper-jobs``)
GLOPER_ALLOW_DOWNLOADS     ``1`` lets the pretrained baselines fetch missing
                           weights from where they are published (off)
=========================  =====================================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gloper_jobs import defaults
from gloper_jobs.exceptions import ConfigurationError


def _default_database_url() -> str:
    return f"sqlite:///{(Path.cwd() / defaults.DATABASE_FILENAME).as_posix()}"


def _default_results_dir() -> Path:
    return Path.cwd() / defaults.RESULTS_DIRNAME


class Settings(BaseSettings):
    """Everything configurable from the environment, validated once."""

    model_config = SettingsConfigDict(env_prefix="GLOPER_", extra="ignore", frozen=True)

    database_url: str = Field(default_factory=_default_database_url)
    results_dir: Path = Field(default_factory=_default_results_dir)
    models_dir: Path = Field(
        default=defaults.MODELS_DIR,
        validation_alias=AliasChoices("GLOPER_MODELS_DIR", "U2NET_HOME"),
    )
    foreground_model: str = defaults.FOREGROUND_MODEL
    device: str = "auto"
    torch_threads: int | None = None
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS
    eval_size: int = defaults.EVAL_SIZE
    examples_dir: Path | None = None
    sam_checkpoint: Path | None = None
    clipseg_weights: Path | None = None
    dino_weights: Path | None = None
    weights_dir: Path = defaults.WEIGHTS_DIR
    allow_downloads: bool = False

    @field_validator("models_dir", "results_dir", "weights_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("sam_checkpoint", "clipseg_weights", "dino_weights", mode="after")
    @classmethod
    def _expand_optional(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("foreground_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in defaults.FOREGROUND_MODELS:
            raise ValueError(
                f"unknown foreground model {value!r}; use one of {', '.join(defaults.FOREGROUND_MODELS)}"
            )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("max_image_pixels", "eval_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from the environment; ``overrides`` (not None) win.

        Raises :class:`ConfigurationError` naming the variable and the fix.
        """
        clean = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**clean)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"GLOPER_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from exc

    def foreground_model_path(self, name: str | None = None) -> Path:
        """Where the ONNX file of a foreground model lives (the layout rembg uses)."""
        model = name or self.foreground_model
        return self.models_dir / "models" / model / f"{model}.onnx"
