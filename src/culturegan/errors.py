"""Project exception types: one per kind of user error, each with a hint the CLI prints."""

from __future__ import annotations


class CultureganError(Exception):
    """A user-facing error: the CLI prints `message` and `hint` as one clear line each."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(CultureganError):
    """params.yaml is missing, malformed, or has an unknown key or a bad value."""


class SourceError(CultureganError):
    """A data source (folder, URL, S3 prefix) cannot be read."""


class IngestError(CultureganError):
    """Ingest cannot go on (e.g. nothing usable was found in the source)."""


class ValidationFailed(CultureganError):
    """The data validation gate failed."""


class CheckpointError(CultureganError):
    """A training checkpoint is corrupt, truncated, or was written for another run configuration."""
