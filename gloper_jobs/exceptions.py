"""The one exception root of gloper-jobs.

Every error the library raises on purpose derives from :class:`GloperError`.
:class:`PermanentError` means retrying the same input cannot help (a bad photo,
missing weights, a wrong parameter); :class:`TransientError` means it may
succeed later (a store or broker that is down, a GPU that is out of memory).
The queue retries only transient errors.
"""

from __future__ import annotations


class GloperError(Exception):
    """Root of every error gloper-jobs raises on purpose."""


class PermanentError(GloperError):
    """Retrying the same input will fail the same way."""


class TransientError(GloperError):
    """The operation may succeed if retried later."""


class ConfigurationError(PermanentError):
    """A setting from the environment or the command line is invalid."""


class UnknownMethodError(PermanentError, KeyError):
    """No segmentation method is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidParameterError(PermanentError, ValueError):
    """A method or profile was given a parameter it does not accept."""


class ImageLoadError(PermanentError):
    """A photo could not be read: corrupt, truncated, empty, not an image or too large."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LabelError(PermanentError):
    """A label file exists but cannot be used for scoring."""


class WeightsMissingError(PermanentError):
    """Model weights are not where the settings say, and cannot be fetched."""


class WeightsChecksumError(PermanentError):
    """A model file does not have the published checksum."""


class DatasetError(PermanentError):
    """A dataset folder is missing, empty, or not laid out as expected."""


class PathEscapeError(DatasetError):
    """A path given for a dataset item resolves outside the dataset's root (``../``,
    an absolute path elsewhere, or a symlink that points out)."""


class ManifestError(DatasetError):
    """A manifest table cannot be used: unreadable, a missing column, a duplicate path."""


class StorageError(PermanentError):
    """A storage URL (``s3://...``) cannot be used: unknown scheme, missing extra, no access."""


class ModelCheckpointError(PermanentError):
    """A GloPER model checkpoint is missing, corrupt, truncated or not a GloPER model."""


class ModelSettingsError(PermanentError):
    """A GloPER model was trained for other settings than the run asks for."""


class StorageUnavailableError(TransientError):
    """Object storage throttled the request or could not be reached; retrying may succeed."""


class JobNotFoundError(PermanentError):
    """No job with that id or key is in the store."""


class StoreUnavailableError(TransientError):
    """The result store (SQLite or PostgreSQL) cannot be reached right now."""


class BrokerUnavailableError(TransientError):
    """The broker (Redis) cannot be reached right now."""


class DeviceOutOfMemoryError(TransientError):
    """The GPU (or host) ran out of memory; lower the size setting or the concurrency."""
