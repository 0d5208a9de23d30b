"""X-ray files (PNG, JPEG, DICOM) -> one float image in [0, 1]. The only place that decodes pixels.

Why one decoder: the class token of an image depends on every intensity step before the encoder, so
the CLI, the embedding job, the service and the datasets must turn a file into pixels identically.

Rules (DICOM PS3.3; docs/method.md#image-decoding):

- The format is sniffed from the bytes (magic numbers), never from the file name.
- The pixel limit is checked from the header *before* any pixel is decoded (PNG/JPEG: the size PIL
  reads from the header; DICOM: Rows x Columns), so a decompression bomb costs nothing.
  ``PIL.Image.MAX_IMAGE_PIXELS`` is set to :data:`DEFAULT_MAX_PIXELS` on import, so PIL's own
  guard protects any other PIL call in the process with the same limit (it refuses above twice that).
- PNG/JPEG: 8-bit images are divided by 255 (kept as the file shows them); 16-bit and 32-bit
  grayscale PNGs carry no display window, so they are stretched to their own min..max, like a DICOM
  without window. RGB/RGBA/palette images become gray with ITU-R 601 luma; JPEG EXIF orientation is
  applied.
- DICOM (pydicom 3): stored values -> modality LUT (rescale slope/intercept or LUT sequence) -> VOI
  LUT sequence, else the first window (LINEAR, LINEAR_EXACT or SIGMOID), else min..max -> MONOCHROME1
  inverted (pydicom does not) -> [0, 1]. Multi-frame files: the first frame only. Compressed transfer
  syntaxes decode through pydicom's plugins (Pillow, pylibjpeg + openjpeg; note pylibjpeg-libjpeg,
  needed for JPEG-LS/lossless, is GPLv3); a syntax without an installed decoder is refused clearly.
- Every bad input raises :class:`~saerad.errors.ImageDecodeError` (or its subclass
  :class:`~saerad.errors.ImageTooLargeError`) with a message for the user. Messages and logs never
  contain DICOM tag values (patient data).
"""

from __future__ import annotations

import io
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from saerad.errors import ImageDecodeError, ImageTooLargeError

if TYPE_CHECKING:
    from pydicom import Dataset

#: Default pixel limit (width x height of one frame): 64 Mpx, above the largest chest radiographs
#: (~4,300 x 3,500 = 15 Mpx) and below what a decompression bomb needs to exhaust memory.
DEFAULT_MAX_PIXELS: int = 64 * 1024 * 1024

# PIL's own guard, set consistently: it warns above this and refuses above twice this.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICM_OFFSET = 128


@dataclass(frozen=True)
class XRay:
    """A decoded X-ray: float32 (H, W) in [0, 1], displayed polarity (bones bright).

    ``dicom`` keeps a DICOM source's attributes without its pixel data, for outputs that must
    reference or join the source (a DICOM SR in the same study, a FHIR ImagingStudy reference). It
    holds patient data, so it is left out of ``repr`` and must never be logged.
    """

    pixels: np.ndarray
    original_size: tuple[int, int]  # (height, width) of the decoded file
    source_format: str  # "png" | "jpeg" | "dicom"
    dicom: Dataset | None = field(default=None, repr=False, compare=False)


def load_xray(source: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XRay:
    """Decode a PNG, JPEG or DICOM file (path or bytes) into an :class:`XRay`.

    Raises :class:`ImageTooLargeError` when one frame has more than ``max_pixels`` pixels and
    :class:`ImageDecodeError` for anything that is not a decodable X-ray.
    """
    data, name = _read_source(source)
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")
    kind = _sniff(data)
    header = None
    if kind in ("png", "jpeg"):
        pixels = _decode_pil(data, kind, name, max_pixels)
    elif kind in ("dicom", "dicom-raw"):
        pixels, header = _decode_dicom(data, name, max_pixels, force=kind == "dicom-raw")
        kind = "dicom"
    else:
        raise ImageDecodeError(f"{name} is not a PNG, JPEG or DICOM image: {_what_is_it(data)}")
    pixels = _finish(pixels)
    return XRay(
        pixels=pixels, original_size=(int(pixels.shape[0]), int(pixels.shape[1])), source_format=kind, dicom=header
    )


# --------------------------------------------------------------------------------------- helpers


def _read_source(source: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the uploaded image"
    path = Path(source)
    try:
        return path.read_bytes(), f"'{path.name}'"
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"image file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(f"{path} is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _sniff(data: bytes) -> str | None:
    """"png" | "jpeg" | "dicom" | "dicom-raw" (no preamble) or None."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if len(data) >= _DICM_OFFSET + 4 and data[_DICM_OFFSET : _DICM_OFFSET + 4] == b"DICM":
        return "dicom"
    # DICOM without the 128-byte preamble (old or hand-written files) starts with a group 0x0002 or
    # 0x0008 tag in little endian.
    if data[:2] in (b"\x02\x00", b"\x08\x00") and len(data) >= 8:
        return "dicom-raw"
    return None


_OTHER_SIGNATURES = (
    (b"GIF8", "a GIF"), (b"BM", "a BMP"), (b"II*\x00", "a TIFF"), (b"MM\x00*", "a TIFF"),
    (b"RIFF", "a RIFF/WebP"), (b"%PDF", "a PDF"), (b"PK\x03\x04", "a ZIP archive"),
)


def _what_is_it(data: bytes) -> str:
    for magic, label in _OTHER_SIGNATURES:
        if data.startswith(magic):
            return f"it is {label} file"
    if _looks_like_text(data[:512]):
        return "it looks like a text file"
    return "its file signature is unknown"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_pixels(height: int, width: int, name: str, max_pixels: int) -> None:
    """Refuse one frame over the limit from its declared size, before any decoding."""
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{name} declares an empty image ({width} x {height} pixels)")
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {width} x {height} = {height * width:,} pixels, over the limit of "
            f"{max_pixels:,}; downscale it first (or raise max_pixels if you trust the file)"
        )


# ------------------------------------------------------------------------------------- PNG, JPEG


def _decode_pil(data: bytes, kind: str, name: str, max_pixels: int) -> np.ndarray:
    label = kind.upper()
    try:
        with warnings.catch_warnings():
            # our own check below is the authority between 1x and 2x PIL's limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=(label,))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name} declares more pixels than PIL's safety limit allows") from exc
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as exc:
        raise ImageDecodeError(f"{name} starts like a {label} but its header is corrupt") from exc
    width, height = image.size
    _check_pixels(height, width, name, max_pixels)
    try:
        image.load()
        if kind == "jpeg":
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise ImageDecodeError(f"{name} is a truncated or corrupt {label} file") from exc
    return _pil_to_gray(image)


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _stretch(np.asarray(image).astype(np.float64))
    if mode == "L":
        return np.asarray(image, dtype=np.float32) / np.float32(255.0)
    # "1", "P", "PA", "LA", "La", "RGB", "RGBA", "CMYK", "YCbCr", ...: PIL's ITU-R 601 luma
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
    gray = image.convert("L")
    return np.asarray(gray, dtype=np.float32) / np.float32(255.0)


# ------------------------------------------------------------------------------------------ DICOM


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _decode_dicom(data: bytes, name: str, max_pixels: int, *, force: bool) -> tuple[np.ndarray, Dataset]:
    """The first frame as float pixels, and the dataset without its pixel data."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except InvalidDicomError as exc:
        raise ImageDecodeError(f"{name} is not a valid DICOM file") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged headers
        raise ImageDecodeError(f"{name} has a damaged or truncated DICOM header") from exc

    if not any(tag in ds for tag in _PIXEL_KEYWORDS):
        if force and "Rows" not in ds:
            raise ImageDecodeError(f"{name} is not a PNG, JPEG or DICOM image")
        raise ImageDecodeError(
            f"{name} is a DICOM file without pixel data (a report, presentation state or other "
            "non-image object)"
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageDecodeError(f"{name} lacks valid Rows/Columns attributes") from exc
    _check_pixels(rows, cols, name, max_pixels)  # first frame only is decoded

    _require_decoder(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        from pydicom.pixels import pixel_array

        arr = pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise anything on corrupt streams
        raise ImageDecodeError(f"{name}: the DICOM pixel data is truncated or corrupt") from exc

    if samples > 1 or arr.ndim == 3:
        arr = _dicom_color_to_gray(arr, ds)
    else:
        arr = _dicom_grayscale(arr, ds)
        if photometric == "MONOCHROME1":
            arr = 1.0 - arr
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    return arr, ds


def _require_decoder(ds, name: str) -> None:
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        return  # pydicom falls back to implicit VR little endian (native pixels)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        label = uid if getattr(uid, "name", uid) == uid else f"{uid} ({uid.name})"
        raise ImageDecodeError(
            f"{name} uses transfer syntax {label}, which saerad cannot decode; re-export it "
            "uncompressed or as JPEG/JPEG 2000"
        ) from exc
    if not decoder.is_available:
        raise ImageDecodeError(
            f"{name} uses transfer syntax {uid.name}; no installed decoder handles it (install "
            "pylibjpeg-openjpeg, or pylibjpeg-libjpeg (GPLv3) for JPEG-LS and lossless JPEG)"
        )


def _dicom_grayscale(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds).astype(np.float64, copy=False)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        try:
            out = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
            return _stretch(out)
        except Exception:  # noqa: BLE001 - a broken LUT: fall back to the window or min..max
            pass
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        windowed = _window(values, _first(center), _first(width), str(ds.get("VOILUTFunction", "LINEAR")))
        if windowed is not None:
            return windowed
    return _stretch(values)


def _first(value) -> float:
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return float("nan")


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to [0, 1]; None when the window is unusable."""
    if not (np.isfinite(center) and np.isfinite(width)):
        return None
    function = function.strip().upper()
    if function == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return None
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _dicom_color_to_gray(arr: np.ndarray, ds) -> np.ndarray:
    # pydicom converts YBR to RGB by default; palette colour is rare for radiographs
    if arr.ndim == 2:
        return _stretch(arr.astype(np.float64))
    rgb = arr[..., :3].astype(np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    bits = int(ds.get("BitsStored", 8) or 8)
    return gray / float(2**bits - 1)


# --------------------------------------------------------------------------------------- common


def _stretch(values: np.ndarray) -> np.ndarray:
    """Min..max to [0, 1]; a constant image becomes all zeros."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nan)
    lo, hi = np.nanmin(values) if finite.any() else 0.0, np.nanmax(values) if finite.any() else 0.0
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def _finish(pixels: np.ndarray) -> np.ndarray:
    pixels = np.nan_to_num(np.asarray(pixels, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(pixels, 0.0, 1.0, out=pixels)
    if pixels.ndim != 2:
        raise ImageDecodeError(f"decoded image has unexpected shape {pixels.shape}")
    return np.ascontiguousarray(pixels)


def resize_image(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a float image (H, W) to ``size`` (an int = square, or (height, width)).

    Area averaging when shrinking (no aliasing of fine lines), bilinear when enlarging. Used for
    decoded images and for maps over them alike.
    """
    height, width = (size, size) if isinstance(size, int) else size
    src = np.asarray(pixels, dtype=np.float32)
    if src.shape == (height, width):
        return src.copy()
    shrinking = height <= src.shape[0] and width <= src.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    out = Image.fromarray(src, mode="F").resize((width, height), method)
    return np.array(out, dtype=np.float32)  # a writable copy


__all__ = ["DEFAULT_MAX_PIXELS", "XRay", "load_xray", "resize_image"]
