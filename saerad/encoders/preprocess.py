"""A checkpoint's own image processing, applied to one gray X-ray.

Hugging Face vision checkpoints (Rad-DINO, facebook/dinov2-*) ship ``preprocessor_config.json``
describing resize -> centre crop -> rescale -> normalise. :class:`ImagePreprocessor` reads that file
and reproduces the PIL backend of transformers' ``BitImageProcessor``/``ViTImageProcessor``/
``CLIPImageProcessor`` on a single gray channel instead of an RGB copy of it: the three channels of
a gray image are identical, so resizing one channel gives the same numbers at a third of the cost
(tests check equality with ``AutoImageProcessor``). Configurations it does not understand fall back to
the transformers processor itself (:class:`HFProcessorFallback`), so the checkpoint's processing is
honoured either way.

Input is the float [0, 1] image of :func:`saerad.imaging.load_xray`; it is quantised to 8 bits first
because these checkpoints were trained on 8-bit PNG/JPEG files (MIMIC-CXR-JPG for Rad-DINO).

saerad's own extension, read from an optional ``saerad_encoder.json`` next to the checkpoint:
``"pad_to_square": true`` pads the image with black, centred, to a square before the processor runs
(the default encoder's letterbox, see :mod:`saerad.encoders.default`).

Memory is bounded by the output, not by the input's shape: everything runs in 8 bits; the letterbox
pads to a square only up to :data:`MAX_SQUARE_SIDE` (a longer image is first reduced with the same
filter, so a 100 x 24,000 strip never becomes a 24,000-pixel square of floats); a shortest-edge
resize followed by a centre crop whose full result would exceed :data:`MAX_PASS_PIXELS` resamples
only the cropped window (PIL's ``box``: the same filter and scale); and a resize whose horizontal
pass would hold more than :data:`MAX_PASS_PIXELS` runs its vertical pass first (Pillow 13 does so
by itself for the usual case, a tall image reduced in height; older Pillow would not). Images of
chest-X-ray shape and size take exactly the path they always took.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from saerad.errors import ConfigError, ImageDecodeError

PROCESSOR_FILE = "preprocessor_config.json"
SAERAD_FILE = "saerad_encoder.json"

# processor types whose PIL pipeline is resize -> centre crop -> rescale -> normalise
_KNOWN_TYPES = frozenset(
    {"BitImageProcessor", "ViTImageProcessor", "CLIPImageProcessor", "DINOv2ImageProcessor",
     "BitImageProcessorFast", "ViTImageProcessorFast", "CLIPImageProcessorFast"}
)
# class defaults of those processors, used where the JSON leaves a field out
_DEFAULTS = {
    "BitImageProcessor": dict(do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
                              crop_size={"height": 224, "width": 224}),
    "CLIPImageProcessor": dict(do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
                               crop_size={"height": 224, "width": 224}),
    "ViTImageProcessor": dict(do_resize=True, size={"height": 224, "width": 224}, resample=2,
                              do_center_crop=False, crop_size=None),
}


#: Longest side the letterbox pads at full resolution (8192^2 8-bit pixels = 64 MiB, above any
#: radiograph); a longer image is reduced to it first.
MAX_SQUARE_SIDE = 8192
#: Pixels a resize may hold between its two passes; above it the shorter pass runs first.
MAX_PASS_PIXELS = 64 * 1024 * 1024
_CHUNK_PIXELS = 1 << 20


def quantize_8bit(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 levels (round half to even), a block of pixels at a time: the 8 bits
    every encoder input goes through."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) gray image, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.uint8)
    flat_in, flat_out = image.reshape(-1), out.reshape(-1)  # a view for the C-contiguous images of load_xray
    for start in range(0, flat_in.size, _CHUNK_PIXELS):
        block = flat_in[start : start + _CHUNK_PIXELS].astype(np.float32) * np.float32(255.0)
        flat_out[start : start + _CHUNK_PIXELS] = np.clip(np.rint(block), 0, 255)
    return out


def _resize(image: Image.Image, size: tuple[int, int], resample: int,
            box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """``image.resize(size, resample, box)`` whose intermediate image stays under MAX_PASS_PIXELS.

    A horizontal-first resize holds (rows the vertical pass needs) x (output width): for a tall,
    narrow image, its whole height times the output width. Then the vertical pass runs first, as
    its own call (what Pillow 13 chooses by itself there; the two calls give its result exactly).
    """
    box = box or (0.0, 0.0, float(image.width), float(image.height))
    width, height = size
    if (box[3] - box[1] + 2) * width <= MAX_PASS_PIXELS or height >= box[3] - box[1]:
        return image.resize(size, resample=resample, box=box)
    column = image.resize((image.width, height), resample=resample, box=(0.0, box[1], float(image.width), box[3]))
    return column.resize(size, resample=resample, box=(box[0], 0.0, box[2], float(height)))


def _letterbox(gray: np.ndarray, resample: int) -> Image.Image:
    """Pad an 8-bit image with black, centred, to a square (reduced first above MAX_SQUARE_SIDE)."""
    image = Image.fromarray(gray)
    height, width = gray.shape
    side = max(height, width)
    if side > MAX_SQUARE_SIDE:
        factor = MAX_SQUARE_SIDE / side
        image = _resize(image, (max(1, round(width * factor)), max(1, round(height * factor))), resample)
        width, height = image.size
        side = max(height, width)
    if height == width:
        return image
    square = Image.new("L", (side, side), 0)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


@dataclass(frozen=True)
class InputGeometry:
    """Where an image of ``original_shape`` lands in the model input, as one affine map per axis:
    ``y_in = scale_y * y + offset_y`` in pixel-edge coordinates (so ``[0, H]`` maps onto the band the
    image covers in the input; padding and cropping show up as offsets)."""

    original_shape: tuple[int, int]
    input_shape: tuple[int, int]
    scale_y: float
    offset_y: float
    scale_x: float
    offset_x: float

    def to_original(self, input_map: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
        """A map over the model input -> the same map over the whole original image, sampled on an
        ``out_shape`` grid (bilinear; parts of the image a centre crop cut away get 0)."""
        from scipy.ndimage import map_coordinates

        values = np.asarray(input_map, dtype=np.float32)
        if values.shape != tuple(self.input_shape):
            raise ValueError(f"map has shape {values.shape}, the model input is {self.input_shape}")
        (h0, w0), (out_h, out_w) = self.original_shape, out_shape
        rows = (np.arange(out_h) + 0.5) * (h0 / out_h) * self.scale_y + self.offset_y - 0.5
        cols = (np.arange(out_w) + 0.5) * (w0 / out_w) * self.scale_x + self.offset_x - 0.5
        inside_y = (rows >= -0.5) & (rows <= self.input_shape[0] - 0.5)
        inside_x = (cols >= -0.5) & (cols <= self.input_shape[1] - 0.5)
        grid = np.meshgrid(rows, cols, indexing="ij")
        out = map_coordinates(values, grid, order=1, mode="nearest").astype(np.float32)
        out[~inside_y, :] = 0.0
        out[:, ~inside_x] = 0.0
        return out


@dataclass(frozen=True)
class ImagePreprocessor:
    """resize -> centre crop -> rescale -> normalise, as the checkpoint's processor config says."""

    size: dict  # {"shortest_edge": n} or {"height": h, "width": w}; empty: no resize
    resample: int  # PIL resampling filter id (2 bilinear, 3 bicubic, 4 box...)
    crop: tuple[int, int] | None  # (height, width) of the centre crop
    rescale_factor: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    pad_to_square: bool = False
    processor_type: str = "BitImageProcessor"

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ImagePreprocessor | HFProcessorFallback:
        """The fast path for configurations it reproduces exactly, else the transformers processor."""
        directory = Path(directory)
        path = directory / PROCESSOR_FILE
        if not path.is_file():
            raise ConfigError(f"{path} not found: a checkpoint directory needs its image-processor config")
        config = json.loads(path.read_text(encoding="utf-8"))
        pad = bool(read_saerad_options(directory).get("pad_to_square", False))
        kind = str(config.get("image_processor_type", "BitImageProcessor"))
        fast = cls._from_config(config, kind, pad)
        return fast if fast is not None else HFProcessorFallback(str(directory), pad)

    @classmethod
    def _from_config(cls, config: dict, kind: str, pad: bool) -> ImagePreprocessor | None:
        if kind not in _KNOWN_TYPES or config.get("do_pad") or config.get("do_reduce_labels"):
            return None
        base = kind.removesuffix("Fast")
        defaults = _DEFAULTS.get(base, _DEFAULTS["BitImageProcessor"])
        get = lambda key: config.get(key, defaults.get(key))  # noqa: E731
        size = dict(get("size") or {}) if get("do_resize") else {}
        if isinstance(config.get("size"), int):
            size = {"shortest_edge": int(config["size"])} if base != "ViTImageProcessor" else {
                "height": int(config["size"]), "width": int(config["size"])}
        if size and not ({"shortest_edge"} == set(size) or {"height", "width"} == set(size)):
            return None  # longest_edge, max_height...: let transformers do it
        crop = None
        if get("do_center_crop"):
            crop_size = get("crop_size") or {}
            if isinstance(crop_size, int):
                crop_size = {"height": crop_size, "width": crop_size}
            if {"height", "width"} != set(crop_size):
                return None
            crop = (int(crop_size["height"]), int(crop_size["width"]))
        do_rescale = config.get("do_rescale", True)
        do_normalize = config.get("do_normalize", True)
        mean, std = config.get("image_mean"), config.get("image_std")
        if do_normalize and (mean is None or std is None):
            return None
        as3 = lambda v: tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))  # noqa: E731
        return cls(
            size={k: int(v) for k, v in size.items()},
            resample=int(get("resample") if get("resample") is not None else 2),
            crop=crop,
            rescale_factor=float(config.get("rescale_factor", 1 / 255)) if do_rescale else None,
            mean=as3(mean) if do_normalize else None,
            std=as3(std) if do_normalize else None,
            pad_to_square=pad,
            processor_type=kind,
        )

    @property
    def output_size(self) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if "height" in self.size:
            return (self.size["height"], self.size["width"])
        raise ValueError("output size depends on the input (shortest-edge resize without crop)")

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float [0, 1] -> (3, S, S) float32, identical to the processor on an RGB copy."""
        return self.normalize_batch(torch.from_numpy(self.to_uint8(image))[None])[0]

    def to_uint8(self, image: np.ndarray) -> np.ndarray:
        """The geometric half (pad, 8-bit, resize, crop): (H, W) float -> (S, S) uint8.

        The embedding job runs this half in DataLoader workers and ships 1 byte per pixel instead of
        12 (3 float channels), then calls :meth:`normalize_batch` on the device.
        """
        gray8 = quantize_8bit(image)
        gray = _letterbox(gray8, self.resample) if self.pad_to_square else Image.fromarray(gray8)
        del gray8
        if self.size:
            gray = self._resized(gray)
        arr = np.asarray(gray)
        if self.crop is not None:
            arr = _center_crop(arr, self.crop)
        return np.array(arr, dtype=np.uint8, copy=True)  # writable and contiguous, for torch

    def _resized(self, gray: Image.Image) -> Image.Image:
        """The resize; above MAX_PASS_PIXELS only the centre-crop window that follows it."""
        new_h, new_w = self._resize_to(gray.height, gray.width)
        if new_h * new_w <= MAX_PASS_PIXELS:
            return _resize(gray, (new_w, new_h), self.resample)
        if self.crop is not None and new_h >= self.crop[0] and new_w >= self.crop[1]:
            # Only the centre-crop window of the resized image is kept: resample just that window
            # (the caller's crop then finds it already of the crop's size).
            crop_h, crop_w = self.crop
            top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
            sx, sy = gray.width / new_w, gray.height / new_h
            box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
            return _resize(gray, (crop_w, crop_h), self.resample, box=box)
        raise ImageDecodeError(
            f"a {gray.width} x {gray.height} image is too elongated for this encoder's preprocessing "
            f"(it would be resized to {new_w} x {new_h} pixels)"
        )

    def normalize_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """The intensity half: (B, S, S) uint8 on any device -> (B, 3, S, S) float32 there."""
        values = batch.to(torch.float32)
        if self.rescale_factor is not None:
            values = values * self.rescale_factor
        values = values[:, None].expand(-1, 3, -1, -1)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=values.device)[None, :, None, None]
            std = torch.tensor(self.std, dtype=torch.float32, device=values.device)[None, :, None, None]
            values = (values - mean) / std
        return values.contiguous()

    def _resize_to(self, height: int, width: int) -> tuple[int, int]:
        if "height" in self.size:
            return (self.size["height"], self.size["width"])
        target = self.size["shortest_edge"]  # transformers' get_resize_output_image_size, no max_size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = target, int(target * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def input_geometry(self, original_shape: tuple[int, int]) -> InputGeometry:
        """Where an (H, W) image lands in the model input: pad -> resize -> centre crop as one affine map."""
        height, width = (int(v) for v in original_shape[:2])
        top = left = 0.0
        if self.pad_to_square:
            side = max(height, width)
            top, left = float((side - height) // 2), float((side - width) // 2)
            height = width = side
        scale_y = scale_x = 1.0
        if self.size:
            new_h, new_w = self._resize_to(height, width)
            scale_y, scale_x = new_h / height, new_w / width
            height, width = new_h, new_w
        off_y, off_x = top * scale_y, left * scale_x
        if self.crop is not None:
            crop_h, crop_w = self.crop
            if height < crop_h or width < crop_w:  # as _center_crop: pad first
                pad_h, pad_w = -(-(max(crop_h, height) - height) // 2), -(-(max(crop_w, width) - width) // 2)
                off_y, off_x = off_y + pad_h, off_x + pad_w
                height, width = max(crop_h, height), max(crop_w, width)
            off_y -= (height - crop_h) // 2
            off_x -= (width - crop_w) // 2
            height, width = crop_h, crop_w
        return InputGeometry(original_shape=(int(original_shape[0]), int(original_shape[1])),
                             input_shape=(height, width), scale_y=scale_y, offset_y=off_y, scale_x=scale_x,
                             offset_x=off_x)

    def describe(self) -> dict:
        out = asdict(self)
        out["crop"] = list(self.crop) if self.crop else None
        out["input"] = "gray [0,1] -> 8-bit -> 3 identical channels"
        return out


def _center_crop(arr: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """transformers' ``center_crop`` (pads with zeros when the image is smaller than the crop)."""
    height, width = arr.shape
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        new_h, new_w = max(crop_h, height), max(crop_w, width)
        padded = np.zeros((new_h, new_w), dtype=arr.dtype)
        top_pad, left_pad = -(-(new_h - height) // 2), -(-(new_w - width) // 2)
        padded[top_pad : top_pad + height, left_pad : left_pad + width] = arr
        arr, height, width = padded, new_h, new_w
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return arr[top : top + crop_h, left : left + crop_w]


class HFProcessorFallback:
    """The transformers image processor itself, for configurations :class:`ImagePreprocessor` skips.

    Loaded lazily so that the object pickles as a path into DataLoader workers.
    """

    def __init__(self, directory: str, pad_to_square: bool = False) -> None:
        self.directory = directory
        self.pad_to_square = pad_to_square
        self._processor = None

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "pad_to_square": self.pad_to_square, "_processor": None}

    def _get(self):
        if self._processor is None:
            from transformers import AutoImageProcessor

            self._processor = AutoImageProcessor.from_pretrained(self.directory)
        return self._processor

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        gray = quantize_8bit(image)
        if self.pad_to_square:
            gray = np.asarray(_letterbox(gray, Image.Resampling.BICUBIC))
        elif max(gray.shape) > MAX_SQUARE_SIDE:  # bound what the processor gets, as the letterbox does
            factor = MAX_SQUARE_SIDE / max(gray.shape)
            size = (max(1, round(gray.shape[1] * factor)), max(1, round(gray.shape[0] * factor)))
            gray = np.asarray(_resize(Image.fromarray(gray), size, Image.Resampling.BICUBIC))
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        out = self._get()(images=rgb, return_tensors="pt", input_data_format="channels_last")
        return out["pixel_values"][0].float()

    @property
    def output_size(self) -> tuple[int, int]:
        probe = self(np.zeros((64, 48), dtype=np.float32))
        return (int(probe.shape[1]), int(probe.shape[2]))

    def input_geometry(self, original_shape: tuple[int, int]) -> InputGeometry:
        raise ConfigError(
            f"the image processor of {self.directory} is one saerad does not reproduce, so it cannot map the "
            "model input back onto the image (attribution maps need that); use counterfactual localisation"
        )

    def describe(self) -> dict:
        return {"processor": type(self._get()).__name__, "config": self._get().to_dict(),
                "pad_to_square": self.pad_to_square, "input": "gray [0,1] -> 8-bit RGB"}


def read_saerad_options(directory: Path) -> dict:
    """The optional ``saerad_encoder.json`` beside a checkpoint ({} when absent)."""
    path = directory / SAERAD_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON") from exc
