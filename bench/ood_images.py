"""Images that are not chest X-rays, for ``bench_ood.py``: each category yields ``(name, file bytes)``.

Nothing here is stored in the repository: photographs and micrographs come from scikit-image's
``skimage.data`` (bundled with the package), other body parts and modalities (CT, MR, nuclear
medicine, ultrasound) from the DICOM files pydicom installs with its test data, and documents,
screenshots, noise and tiny or blank images are drawn here with a fixed seed.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Sample = tuple[str, bytes]

_WORDS = ("patient history results normal follow review clinical report table value total date name "
          "revenue quarter meeting agenda summary invoice account system error warning config server "
          "request response python function return import class method database query index").split()


def _png(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image | np.ndarray, quality: int = 90) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# ---------------------------------------------------------------------------------- photographs


PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "horse", "hubble_deep_field", "moon",
          "rocket", "clock", "brick", "grass", "gravel", "colorwheel", "logo")


def photographs() -> Iterator[Sample]:
    """skimage.data photographs: as shipped (JPEG), a centre crop, and a gray mirror image."""
    import skimage.data

    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[..., :3]
        array = np.ascontiguousarray(array.astype(np.uint8))
        h, w = array.shape[:2]
        yield f"{name}", _jpeg(array)
        yield f"{name}-crop", _png(np.ascontiguousarray(array[h // 5 : h - h // 5, w // 5 : w - w // 5]))
        gray = np.asarray(Image.fromarray(array).convert("L"))
        yield f"{name}-gray-mirror", _png(np.ascontiguousarray(gray[:, ::-1]))


# ------------------------------------------------------------------------ documents and screenshots


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(_WORDS, n))


def _page(rng: np.random.Generator, size=(850, 1100), font=18, dark=False) -> Image.Image:
    bg, fg = ((30, 30, 30), (220, 220, 220)) if dark else ((255, 255, 255), (20, 20, 20))
    page = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(page)
    y = 60
    draw.text((60, y), _words(rng, 4).title(), fill=fg, font=_font(font + 12))
    y += font * 3
    while y < size[1] - 80:
        for line in textwrap.wrap(_words(rng, 60), width=int(size[0] / (font * 0.55))):
            draw.text((60, y), line, fill=fg, font=_font(font))
            y += int(font * 1.4)
            if y > size[1] - 80:
                break
        y += font
    return page


def _table(rng: np.random.Generator) -> Image.Image:
    page = Image.new("RGB", (1000, 700), "white")
    draw = ImageDraw.Draw(page)
    for r in range(16):
        for c in range(6):
            x, y = 40 + c * 150, 40 + r * 38
            draw.rectangle([x, y, x + 150, y + 38], outline=(120, 120, 120), fill=(235, 240, 250) if r == 0 else None)
            text = _words(rng, 1) if r == 0 or c == 0 else f"{rng.uniform(0, 1e4):,.2f}"
            draw.text((x + 6, y + 10), text, fill="black", font=_font(15))
    return page


def _screenshot(rng: np.random.Generator, dark: bool) -> Image.Image:
    bg = (40, 42, 54) if dark else (240, 240, 240)
    shot = Image.new("RGB", (1280, 800), bg)
    draw = ImageDraw.Draw(shot)
    draw.rectangle([0, 0, 1280, 36], fill=(60, 60, 70) if dark else (210, 210, 215))
    for i in range(6):
        draw.text((20 + i * 110, 9), _words(rng, 1).title(), fill=(230, 230, 230) if dark else "black", font=_font(16))
    draw.rectangle([0, 36, 240, 800], fill=(50, 52, 64) if dark else (225, 228, 235))
    for i in range(14):
        draw.text((20, 60 + i * 36), "> " + _words(rng, 2), fill=(200, 200, 210) if dark else (40, 40, 40), font=_font(15))
    for i in range(5):  # cards with buttons
        x, y = 280 + (i % 3) * 330, 70 + (i // 3) * 330
        draw.rounded_rectangle([x, y, x + 300, y + 290], 12, fill=(70, 72, 90) if dark else "white",
                               outline=(120, 120, 140))
        draw.text((x + 16, y + 16), _words(rng, 3).title(), fill=(240, 240, 240) if dark else "black", font=_font(18))
        for k in range(5):
            draw.text((x + 16, y + 60 + k * 26), _words(rng, 4), fill=(180, 180, 190) if dark else (90, 90, 90),
                      font=_font(14))
        draw.rounded_rectangle([x + 16, y + 230, x + 140, y + 270], 8, fill=(66, 133, 244))
        draw.text((x + 36, y + 240), "Submit", fill="white", font=_font(16))
    return shot


def _code(rng: np.random.Generator) -> Image.Image:
    shot = Image.new("RGB", (1100, 900), (30, 30, 30))
    draw = ImageDraw.Draw(shot)
    palette = [(86, 156, 214), (206, 145, 120), (181, 206, 168), (220, 220, 170), (212, 212, 212)]
    for i in range(40):
        indent = int(rng.integers(0, 4)) * 4
        x = 50 + indent * 9
        draw.text((10, 10 + i * 22), f"{i + 1:>3}", fill=(110, 110, 110), font=_font(16))
        for word in _words(rng, int(rng.integers(2, 8))).split():
            draw.text((x, 10 + i * 22), word, fill=palette[int(rng.integers(len(palette)))], font=_font(16))
            x += 10 * (len(word) + 1)
    return shot


def _chart(rng: np.random.Generator) -> Image.Image:
    chart = Image.new("RGB", (900, 600), "white")
    draw = ImageDraw.Draw(chart)
    draw.line([80, 520, 860, 520], fill="black", width=2)
    draw.line([80, 40, 80, 520], fill="black", width=2)
    values = rng.uniform(50, 450, 12)
    for i, v in enumerate(values):
        x = 100 + i * 62
        draw.rectangle([x, 520 - v, x + 40, 520], fill=tuple(int(c) for c in rng.integers(40, 220, 3)))
        draw.text((x, 530), f"Q{i % 4 + 1}", fill="black", font=_font(14))
    draw.text((300, 10), _words(rng, 3).title(), fill="black", font=_font(22))
    return chart


def documents() -> Iterator[Sample]:
    """Text pages, tables, application and code screenshots, charts, and skimage's page/text scans."""
    import skimage.data

    rng = np.random.default_rng(7)
    for i in range(6):
        yield f"page-{i}", (_png if i % 2 else _jpeg)(_page(rng, font=14 + 3 * i, dark=i == 5))
    for i in range(3):
        yield f"table-{i}", _png(_table(rng))
    for i in range(4):
        yield f"screenshot-{i}", _png(_screenshot(rng, dark=i % 2 == 1))
    for i in range(2):
        yield f"code-{i}", _png(_code(rng))
    for i in range(3):
        yield f"chart-{i}", _png(_chart(rng))
    yield "skimage-page", _png(skimage.data.page())
    yield "skimage-text", _png(skimage.data.text())


# ------------------------------------------------------------------------------------------ noise


def noise() -> Iterator[Sample]:
    """Uniform, Gaussian, colour, salt-and-pepper, smooth and structured noise at several sizes."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(11)
    for side in (64, 256, 512, 1024):
        yield f"uniform-{side}", _png(rng.integers(0, 256, (side, side), dtype=np.uint8))
        yield f"gaussian-{side}", _png(np.clip(rng.normal(128, 40, (side, side)), 0, 255).astype(np.uint8))
        yield f"colour-{side}", _png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        pepper = np.full((side, side), 128, np.uint8)
        mask = rng.random((side, side))
        pepper[mask < 0.05], pepper[mask > 0.95] = 0, 255
        yield f"salt-pepper-{side}", _png(pepper)
        smooth = gaussian_filter(rng.normal(0, 1, (side, side)), side / 32)
        smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
        yield f"smooth-{side}", _png((smooth * 255).astype(np.uint8))
    yy, xx = np.mgrid[0:512, 0:512]
    yield "stripes", _png(((np.sin(xx / 4) > 0) * 255).astype(np.uint8))
    yield "checkerboard", _png((((xx // 32 + yy // 32) % 2) * 255).astype(np.uint8))
    yield "gradient", _png((xx / 2).astype(np.uint8))
    yield "radial", _png((255 * np.hypot(xx - 256, yy - 256) / 363).astype(np.uint8))


# ------------------------------------------------------------------------------ tiny and blank


def tiny_and_blank() -> Iterator[Sample]:
    rng = np.random.default_rng(3)
    for value in (0, 128, 255):
        yield f"1x1-{value}", _png(np.full((1, 1), value, np.uint8))
    for side in (2, 4, 8, 16, 32):
        yield f"random-{side}", _png(rng.integers(0, 256, (side, side), dtype=np.uint8))
    for value in (0, 40, 128, 200, 255):
        yield f"blank-{value}-512", _png(np.full((512, 512), value, np.uint8))
    yield "blank-colour", _jpeg(np.full((600, 800, 3), (30, 120, 200), np.uint8))
    framed = np.zeros((512, 512), np.uint8)
    framed[:8], framed[-8:], framed[:, :8], framed[:, -8:] = 255, 255, 255, 255
    yield "blank-framed", _png(framed)
    yield "1x600", _png(np.full((1, 600), 128, np.uint8))
    yield "3x2-colour", _png(rng.integers(0, 256, (3, 2, 3), dtype=np.uint8))


# ------------------------------------------------------------------- other body parts, modalities


# pydicom test files with real images of other body parts or modalities (not chest radiographs).
PYDICOM_IMAGES = (
    "CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm",  # CT slices (one a head)
    "MR_small.dcm", "examples_overlay.dcm",  # MR (head, abdomen)
    "JPEG2000.dcm",  # a nuclear-medicine whole-body scan
    "examples_jpeg2k.dcm", "examples_palette.dcm", "examples_rgb_color.dcm", "examples_ybr_color.dcm",
    "ExplVR_BigEnd.dcm",  # ultrasound
    "image_dfl.dcm",
)


def other_body_parts() -> Iterator[Sample]:
    """CT, MR, nuclear medicine and ultrasound DICOMs from pydicom's test data; a head CT phantom,
    fundus photographs and micrographs from skimage.data."""
    import pydicom.data
    import skimage.data

    root = Path(pydicom.data.__file__).parent / "test_files"
    for name in PYDICOM_IMAGES:
        path = root / name
        if path.is_file():
            yield f"dicom-{name}", path.read_bytes()
    phantom = skimage.data.shepp_logan_phantom()
    yield "shepp-logan-head-ct", _png((phantom * 255).astype(np.uint8))
    from skimage.transform import radon

    sinogram = radon(phantom[::2, ::2], theta=np.linspace(0, 180, 180, endpoint=False))
    yield "shepp-logan-sinogram", _png((255 * sinogram / sinogram.max()).astype(np.uint8))
    yield "retina", _jpeg(skimage.data.retina())
    yield "microaneurysms", _png(skimage.data.microaneurysms())
    yield "cell", _png(skimage.data.cell())
    yield "immunohistochemistry", _jpeg(skimage.data.immunohistochemistry())


CATEGORIES = {
    "photographs": photographs,
    "documents/screenshots": documents,
    "noise": noise,
    "tiny/blank": tiny_and_blank,
    "other body parts/modalities": other_body_parts,
}
