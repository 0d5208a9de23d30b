"""Typed errors shared by every stage.

Every error a user can cause derives from :class:`SaeradError` and carries a short machine code, so
the CLI can print one line and the service can map it to a 4xx JSON body without a traceback.
"""

from __future__ import annotations


class SaeradError(Exception):
    """Base class of errors whose message is meant for the user."""

    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ImageDecodeError(SaeradError):
    """An input file is not a usable X-ray (corrupt, unsupported, too large, no pixels...)."""

    code = "invalid_image"
    http_status = 400


class ImageTooLargeError(ImageDecodeError):
    """An input image exceeds the configured pixel limit (e.g. a decompression bomb)."""

    code = "image_too_large"
    http_status = 413


class BundleError(SaeradError):
    """A model bundle is missing, corrupted or does not match what the code expects."""

    code = "invalid_bundle"
    http_status = 500


class ConfigError(SaeradError):
    """Options or settings that cannot work together."""

    code = "invalid_options"
    http_status = 422
