"""saerad.imaging: the one decoder, on real fixtures and on generated bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from saerad.errors import ImageDecodeError, ImageTooLargeError
from saerad.imaging import DEFAULT_MAX_PIXELS, XRay, load_xray

MONO2 = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
MONO1 = "Fake_MONOHR1.dcm"


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _dicom_bytes(arr: np.ndarray | None = None, *, transfer_syntax: str | None = None, pixels: bool = True,
                 photometric: str = "MONOCHROME2", **attrs) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 4096 if arr is None else arr
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Patient", "SECRET-42", "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixels:
        ds.PixelData = arr.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _check(xray: XRay, fmt: str) -> None:
    assert xray.source_format == fmt
    assert xray.pixels.dtype == np.float32 and xray.pixels.ndim == 2
    assert xray.pixels.flags["C_CONTIGUOUS"]
    assert 0.0 <= float(xray.pixels.min()) and float(xray.pixels.max()) <= 1.0
    assert xray.original_size == xray.pixels.shape


# ------------------------------------------------------------------------------ real fixtures


@pytest.mark.parametrize(("name", "fmt"), [("00000001_000.png", "png"), ("16747_3_1.jpg", "jpeg"), (MONO2, "dicom")])
def test_fixture_formats_decode(fixtures_dir, name, fmt):
    xray = load_xray(fixtures_dir / name)
    _check(xray, fmt)
    assert float(xray.pixels.std()) > 0.1  # a real radiograph, not a blank


def test_bytes_and_path_give_the_same_pixels(fixtures_dir):
    path = fixtures_dir / "16747_3_1.jpg"
    np.testing.assert_array_equal(load_xray(path).pixels, load_xray(path.read_bytes()).pixels)


def test_monochrome1_is_inverted(fixtures_dir):
    # The two files hold the same stored pixels; only the photometric interpretation differs, so the
    # MONOCHROME1 image, once inverted for display, is the MONOCHROME2 one with polarity undone.
    mono2 = load_xray(fixtures_dir / MONO2).pixels
    mono1 = load_xray(fixtures_dir / MONO1).pixels
    np.testing.assert_allclose(1.0 - mono1, mono2, atol=1e-6)
    assert not np.allclose(mono1, mono2, atol=0.1)


def test_jpeg_dicom_matches_its_own_stored_values(fixtures_dir):
    import pydicom

    ds = pydicom.dcmread(fixtures_dir / MONO2)
    stored = ds.pixel_array.astype(np.float64)
    expected = (stored - stored.min()) / (stored.max() - stored.min())  # no window: min..max
    np.testing.assert_allclose(load_xray(fixtures_dir / MONO2).pixels, expected, atol=1e-6)


def test_pixel_limit_applies_to_every_format(fixtures_dir):
    for name in ("00000001_000.png", "16747_3_1.jpg", MONO2):
        with pytest.raises(ImageTooLargeError, match="over the limit"):
            load_xray(fixtures_dir / name, max_pixels=10_000)


# --------------------------------------------------------------------------- generated inputs


def test_16_bit_png_keeps_its_precision(tmp_path):
    ramp = np.linspace(1000, 60000, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "ramp16.png"
    path.write_bytes(_png_bytes(ramp))
    assert Image.open(path).mode.startswith("I")
    xray = load_xray(path)
    _check(xray, "png")
    assert xray.pixels.min() == 0.0 and xray.pixels.max() == 1.0  # stretched: no window in a PNG
    assert len(np.unique(xray.pixels)) > 1000  # not squeezed through 8 bits
    assert np.all(np.diff(xray.pixels.ravel()) >= 0)


def test_rgb_and_rgba_become_gray():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (32, 40), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((32, 40, 1), 255, np.uint8)], axis=2)
    expected = gray.astype(np.float32) / 255
    np.testing.assert_allclose(load_xray(_png_bytes(rgb)).pixels, expected, atol=1 / 255)
    np.testing.assert_allclose(load_xray(_png_bytes(rgba)).pixels, expected, atol=1 / 255)
    np.testing.assert_allclose(load_xray(_png_bytes(gray)).pixels, expected)


def test_dicom_modality_lut_then_window():
    stored = np.arange(0, 4096, dtype=np.uint16)[None].repeat(2, axis=0)
    data = _dicom_bytes(stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=400)
    pixels = load_xray(data).pixels.astype(np.float64)
    hu = stored.astype(np.float64) - 1024
    expected = np.clip((hu - (0 - 0.5)) / (400 - 1) + 0.5, 0, 1)  # DICOM LINEAR window
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_dicom_monochrome1_window_is_inverted_after_windowing():
    stored = np.arange(0, 4096, dtype=np.uint16)[None].repeat(2, axis=0)
    kwargs = dict(WindowCenter=2048, WindowWidth=1024)
    mono2 = load_xray(_dicom_bytes(stored, **kwargs)).pixels
    mono1 = load_xray(_dicom_bytes(stored, photometric="MONOCHROME1", **kwargs)).pixels
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"Findings: the lungs are clear.\n", "not a PNG, JPEG or DICOM.*text"),
        (b"GIF89a" + bytes(40), "GIF"),
    ],
)
def test_not_an_image(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        load_xray(data)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found"):
        load_xray(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError, match="directory"):
        load_xray(tmp_path)


def test_text_file_with_image_suffix(tmp_path):
    path = tmp_path / "scan.jpg"
    path.write_text("this is a note, not a radiograph")
    with pytest.raises(ImageDecodeError, match="'scan.jpg' is not a PNG, JPEG or DICOM"):
        load_xray(path)


def test_truncated_jpeg(fixtures_dir):
    data = (fixtures_dir / "16747_3_1.jpg").read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated or corrupt JPEG"):
        load_xray(data[: len(data) // 2])


def test_truncated_png():
    data = _png_bytes(np.random.default_rng(1).integers(0, 256, (128, 128), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="PNG"):
        load_xray(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="PNG"):
        load_xray(data[:20])  # cut inside the header


def _png_header_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)  # a tiny payload claiming to be a huge image
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError) as info:
        load_xray(_png_header_bomb(100_000, 100_000))
    assert info.value.http_status == 413
    # between our limit and PIL's hard limit (2x): still refused by our check, not by a warning
    side = int((DEFAULT_MAX_PIXELS * 1.5) ** 0.5)
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        load_xray(_png_header_bomb(side, side))


def test_dicom_image_without_pixel_data_is_called_damaged():
    with pytest.raises(ImageDecodeError, match="declares an image but holds no readable pixel data"):
        load_xray(_dicom_bytes(pixels=False))


def test_dicom_non_image_object_is_called_so():
    import pydicom
    from pydicom.uid import BasicTextSRStorage

    ds = pydicom.dcmread(io.BytesIO(_dicom_bytes(pixels=False)))
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match="without pixel data \\(a report"):
        load_xray(buf.getvalue())


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_dicom_is_called_truncated_in_one_quiet_line(fixtures_dir, keep, capsys, caplog):
    data = (fixtures_dir / MONO2).read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        load_xray(data[: int(len(data) * keep)])
    assert "\n" not in str(info.value)
    captured = capsys.readouterr()
    assert captured.out == captured.err == "" and not caplog.records  # no pydicom warnings or log lines


def test_corrupt_dicom_bytes_never_escape_as_other_errors_or_noise(fixtures_dir, capsys, caplog):
    import random

    data = (fixtures_dir / MONO2).read_bytes()
    rng = random.Random(0)
    for _ in range(150):
        damaged = bytearray(data)
        start = rng.randrange(132, len(data) - 64)
        for i in range(start, start + rng.randrange(1, 48)):
            damaged[i] = rng.randrange(256)
        try:
            load_xray(bytes(damaged))
        except ImageDecodeError as exc:
            assert "\n" not in str(exc)
    captured = capsys.readouterr()
    assert captured.out == captured.err == "" and not caplog.records


def test_dicom_with_unknown_transfer_syntax():
    with pytest.raises(ImageDecodeError, match="transfer syntax 1.2.3.4.5.6.7.8.*cannot decode"):
        load_xray(_dicom_bytes(transfer_syntax="1.2.3.4.5.6.7.8"))


def test_dicom_too_large_is_refused_from_rows_and_columns():
    with pytest.raises(ImageTooLargeError):
        load_xray(_dicom_bytes(), max_pixels=100)


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_truncated_dicom_pixels(fixtures_dir):
    data = (fixtures_dir / MONO2).read_bytes()
    with pytest.raises(ImageDecodeError):
        load_xray(data[: len(data) // 2])


def test_errors_never_echo_patient_tags():
    messages = []
    for data in (_dicom_bytes(pixels=False), _dicom_bytes(transfer_syntax="1.2.3.4.5.6.7.8")):
        with pytest.raises(ImageDecodeError) as info:
            load_xray(data)
        messages.append(str(info.value))
    assert all("SECRET-42" not in m and "Test^Patient" not in m for m in messages)


def test_multi_frame_dicom_gives_its_first_frame():
    frames = np.stack([np.tile(np.arange(8, dtype=np.uint16), (4, 1)), np.full((4, 8), 7, np.uint16)])
    data = _dicom_bytes(frames.reshape(8, 8), Rows=4, Columns=8, NumberOfFrames=2, BitsStored=16, HighBit=15)
    pixels = load_xray(data).pixels
    assert pixels.shape == (4, 8)
    np.testing.assert_allclose(pixels[0], np.arange(8) / 7, atol=1e-6)


def test_dicom_header_is_kept_without_pixels_and_out_of_repr():
    xray = load_xray(_dicom_bytes(StudyInstanceUID="1.2.3.4"))
    assert xray.dicom is not None and xray.dicom.StudyInstanceUID == "1.2.3.4" and xray.dicom.PatientID == "SECRET-42"
    assert "PixelData" not in xray.dicom  # the header travels with the XRay; the pixels do not twice
    assert "SECRET-42" not in repr(xray) and "Test^Patient" not in repr(xray)
    assert load_xray(_png_bytes(np.zeros((8, 8), np.uint8))).dicom is None
