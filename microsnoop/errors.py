"""The core library's exception hierarchy: every message names the input and the fix."""

from __future__ import annotations


class MicrosnoopError(Exception):
    """Base class for errors raised by microsnoop."""


class ConfigError(MicrosnoopError, ValueError):
    """A configuration value is out of range or unknown."""


class InvalidImageError(MicrosnoopError, ValueError):
    """An image file is unreadable, empty, constant, non-finite or of an unsupported shape."""


class ChannelMismatchError(MicrosnoopError, ValueError):
    """Images in one set disagree on their channel count."""


class CheckpointError(MicrosnoopError, ValueError):
    """A checkpoint file is missing, corrupt or incompatible."""


class ManifestError(MicrosnoopError, ValueError):
    """A manifest is missing required columns or has duplicate ids."""


class MissingColumnsError(ManifestError, KeyError):
    """A table lacks the columns an operation needs (also a KeyError, as pandas would raise)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DeviceError(MicrosnoopError, RuntimeError):
    """The requested compute device is not available here."""
