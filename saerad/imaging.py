"""X-ray files (PNG, JPEG, DICOM) -> one float image in [0, 1]. The only place that decodes pixels.

Why one decoder: the class token of an image depends on every intensity step before the encoder, so
the CLI, the embedding job, the service and the datasets must turn a file into pixels identically.

Rules (DICOM PS3.3; docs/method.md#image-decoding):

- The format is sniffed from the bytes (magic numbers), never from the file name.
- The pixel limit (and :data:`MAX_SIDE`) is checked from the header *before* any pixel is decoded
  (PNG/JPEG: the size PIL reads from the header; DICOM: Rows x Columns), so a decompression bomb
  costs nothing.
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
- Memory is bounded by the pixel limit, not by the file: pixels are converted to float32 in
  blocks (never a float64 or second float copy of the whole image), so decoding one image of
  ``max_pixels`` costs about its float32 result plus its 8- or 16-bit decoded form.
- Every bad input raises :class:`~saerad.errors.ImageDecodeError` (or its subclass
  :class:`~saerad.errors.ImageTooLargeError`) with a message for the user. Messages and logs never
  contain DICOM tag values (patient data).
"""

from __future__ import annotations

import io
import logging
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
#: Longest side accepted, whatever the pixel count: 8x the longest radiograph. Beyond it, memory
#: grows with the side rather than the pixels (PIL keeps a pointer per row: 480 MB for a
#: 1 x 60,000,000 strip before a pixel is decoded).
MAX_SIDE: int = 32768

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
    if max(height, width) > MAX_SIDE:
        raise ImageTooLargeError(
            f"{name} is {width} x {height} pixels; sides longer than {MAX_SIDE:,} pixels are refused "
            "(no radiograph is that long): downscale or crop it first"
        )
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
            ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise ImageDecodeError(f"{name} is a truncated or corrupt {label} file") from exc
    if image.mode in _HIGH_DEPTH_MODES:
        return _stretch(image)
    image = _pil_luma(image)  # the only reference to a colour image goes here, before the float copy
    return _rowwise(image, lambda rows: rows.astype(np.float32) / np.float32(255.0))


_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _pil_luma(image: Image.Image) -> Image.Image:
    """An 8-bit image as "L": "1", "P", "LA", "RGB", "RGBA", "CMYK", ... through PIL's ITU-R 601 luma."""
    if image.mode == "L":
        return image
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("L")


# ------------------------------------------------------------------------------------------ DICOM


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _decode_dicom(data: bytes, name: str, max_pixels: int, *, force: bool) -> tuple[np.ndarray, Dataset]:
    """The first frame as float pixels, and the dataset without its pixel data."""
    _quiet_pydicom()
    # pydicom warns about odd values by quoting them (patient data) from wherever an element is
    # first parsed; none of that reaches the user, who gets saerad's one-line error instead.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        return _decode_dicom_quietly(data, name, max_pixels, force=force, caught=caught)


def _decode_dicom_quietly(data: bytes, name: str, max_pixels: int, *, force: bool,
                          caught: list) -> tuple[np.ndarray, Dataset]:
    ds = _read_dicom(data, name, force=force)
    truncated = any("end of file" in str(w.message).lower() for w in caught)
    try:  # pydicom parses elements on first access, so reading them can fail too
        _check_dicom_image(ds, name, force=force, truncated=truncated)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except ImageDecodeError:
        raise
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageDecodeError(f"{name} lacks valid Rows/Columns attributes") from exc
    except Exception as exc:  # noqa: BLE001 - e.g. NotImplementedError for an unknown VR
        raise ImageDecodeError(f"{name} has a damaged DICOM header") from exc
    _check_pixels(rows, cols, name, max_pixels)  # first frame only is decoded

    _require_decoder(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        from pydicom.pixels import pixel_array

        arr = pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise anything on corrupt streams
        raise ImageDecodeError(f"{name}: the DICOM pixel data is truncated or corrupt") from exc

    if samples > 1 or arr.ndim == 3:
        gray = _dicom_color_to_gray(arr, ds)
    else:
        gray = _dicom_grayscale(arr, ds)
        if photometric == "MONOCHROME1":
            np.subtract(np.float32(1.0), gray, out=gray)
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    return gray, ds


def _check_dicom_image(ds, name: str, *, force: bool, truncated: bool) -> None:
    """Refuse a DICOM object without pixels, saying whether it is cut off or simply not an image."""
    if any(tag in ds for tag in _PIXEL_KEYWORDS):
        return
    if force and "Rows" not in ds:
        raise ImageDecodeError(f"{name} is not a PNG, JPEG or DICOM image")
    if truncated:
        raise ImageDecodeError(f"{name} is a truncated DICOM file: it ends inside a data element")
    if "Rows" in ds or "Image Storage" in _sop_class_name(ds):
        raise ImageDecodeError(
            f"{name} declares an image but holds no readable pixel data: the file is truncated or damaged"
        )
    raise ImageDecodeError(
        f"{name} is a DICOM file without pixel data (a report, presentation state or other non-image object)"
    )


def _read_dicom(data: bytes, name: str, *, force: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data), force=force)
    except InvalidDicomError as exc:
        raise ImageDecodeError(f"{name} is not a valid DICOM file") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged headers
        raise ImageDecodeError(f"{name} has a damaged or truncated DICOM header") from exc


def _sop_class_name(ds) -> str:
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return str(getattr(uid, "name", "") or "")


def _quiet_pydicom() -> None:
    """pydicom logs decoder failures with tracebacks and warns about odd values (quoting them: patient
    data) on the root handlers; saerad says what went wrong in one line of its own instead."""
    import pydicom  # noqa: F401 - its import sets the level this overrides

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


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
    """Stored values -> float32 [0, 1], a block of rows at a time (the LUTs are elementwise)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    def modality(rows: np.ndarray) -> np.ndarray:
        return np.asarray(apply_modality_lut(rows, ds), dtype=np.float64)

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        try:
            return _stretch(arr, lambda rows: np.asarray(
                apply_voi_lut(modality(rows), ds, index=0, prefer_lut=True), dtype=np.float64))
        except Exception:  # noqa: BLE001 - a broken LUT: fall back to the window or min..max
            pass
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        center, width = _first(center), _first(width)
        function = str(ds.get("VOILUTFunction", "LINEAR"))
        if _window_usable(center, width, function):
            return _rowwise(arr, lambda rows: _window(modality(rows), center, width, function))
    return _stretch(arr, modality)


def _first(value) -> float:
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return float("nan")


def _window_usable(center: float, width: float, function: str) -> bool:
    """Whether :func:`_window` can apply this window (finite; width > 0, or >= 1 for LINEAR)."""
    if not (np.isfinite(center) and np.isfinite(width)):
        return False
    return width > 0 if function.strip().upper() in ("SIGMOID", "LINEAR_EXACT") else width >= 1


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing straight to [0, 1], for a window :func:`_window_usable` accepts."""
    function = function.strip().upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _dicom_color_to_gray(arr: np.ndarray, ds) -> np.ndarray:
    # pydicom converts YBR to RGB by default; palette colour is rare for radiographs
    if arr.ndim == 2:
        return _stretch(arr)
    scale = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
    luma = np.array([0.299, 0.587, 0.114])
    return _rowwise(arr, lambda rows: (rows[..., :3].astype(np.float64) @ luma) / scale)


# --------------------------------------------------------------------------------------- common

#: Pixels converted at a time: the float64 scratch of one block stays at ~8 MB whatever the image.
_CHUNK_PIXELS = 1 << 20


def _blocks(height: int, width: int):
    """(rows, columns) slices tiling an image in blocks of at most ``_CHUNK_PIXELS`` pixels: whole
    rows at a time, or pieces of one row when a single row is longer than that."""
    if width <= _CHUNK_PIXELS:
        step = _CHUNK_PIXELS // max(1, width)
        for start in range(0, height, step):
            yield slice(start, min(height, start + step)), slice(0, width)
        return
    for row in range(height):
        for start in range(0, width, _CHUNK_PIXELS):
            yield slice(row, row + 1), slice(start, min(width, start + _CHUNK_PIXELS))


def _size(source: np.ndarray | Image.Image) -> tuple[int, int]:
    return (source.height, source.width) if isinstance(source, Image.Image) else source.shape[:2]


def _block(source: np.ndarray | Image.Image, rows: slice, cols: slice) -> np.ndarray:
    """One block of an array, or of a PIL image without an array copy of the whole image."""
    if isinstance(source, Image.Image):
        return np.asarray(source.crop((cols.start, rows.start, cols.stop, rows.stop)))
    return source[rows, cols]


def _rowwise(source: np.ndarray | Image.Image, fn) -> np.ndarray:
    """``fn`` (elementwise, on one block) applied to ``source`` into one float32 (H, W) array."""
    height, width = _size(source)
    out = np.empty((height, width), dtype=np.float32)
    for rows, cols in _blocks(height, width):
        out[rows, cols] = fn(_block(source, rows, cols))
    return out


def _stretch(values: np.ndarray | Image.Image, fn=None) -> np.ndarray:
    """``fn(values)`` (default: the values) min..max to float32 [0, 1]; non-finite values become NaN
    (zero after :func:`_finish`); a constant image becomes all zeros."""
    fn = fn or (lambda block: np.asarray(block, dtype=np.float64))
    height, width = _size(values)
    lo, hi = np.inf, -np.inf
    for rows, cols in _blocks(height, width):
        block = fn(_block(values, rows, cols))
        finite = block[np.isfinite(block)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if not hi > lo:
        return np.zeros((height, width), dtype=np.float32)

    def scaled(block: np.ndarray) -> np.ndarray:
        block = fn(block)
        return (np.where(np.isfinite(block), block, np.nan) - lo) / (hi - lo)

    return _rowwise(values, scaled)


def _finish(pixels: np.ndarray) -> np.ndarray:
    """NaN -> 0, clip to [0, 1], in place, a block of rows at a time (the decoders hand over a
    float32 array of their own)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if pixels.ndim != 2:
        raise ImageDecodeError(f"decoded image has unexpected shape {pixels.shape}")
    for rows, cols in _blocks(*pixels.shape):
        block = pixels[rows, cols]
        np.nan_to_num(block, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(block, 0.0, 1.0, out=block)
    return pixels


def resize_image(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a float image (H, W) to ``size`` (an int = square, or (height, width)).

    Area averaging when shrinking (no aliasing of fine lines), bilinear when enlarging. Used for
    decoded images and for maps over them alike. A large image is resampled across in blocks of
    rows, then down, so memory stays bounded by the output (a PIL float image would otherwise copy
    the whole input first).
    """
    height, width = (size, size) if isinstance(size, int) else size
    src = np.asarray(pixels, dtype=np.float32)
    if src.shape == (height, width):
        return src.copy()
    shrinking = height <= src.shape[0] and width <= src.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    if src.size <= _WHOLE_IMAGE_PIXELS:
        out = Image.fromarray(src, mode="F").resize((width, height), method)
        return np.array(out, dtype=np.float32)  # a writable copy
    step = max(1, _WHOLE_IMAGE_PIXELS // max(1, src.shape[1]))
    across = np.concatenate([
        np.asarray(Image.fromarray(np.ascontiguousarray(src[top : top + step]), mode="F").resize(
            (width, min(step, src.shape[0] - top)), method))
        for top in range(0, src.shape[0], step)
    ])
    out = Image.fromarray(across, mode="F").resize((width, height), method)
    return np.array(out, dtype=np.float32)


#: Above this many pixels, :func:`resize_image` works in blocks of rows.
_WHOLE_IMAGE_PIXELS = 4 * 1024 * 1024


__all__ = ["DEFAULT_MAX_PIXELS", "MAX_SIDE", "XRay", "load_xray", "resize_image"]
