"""Reading, writing and resizing images.

Images inside the library are float tensors of shape ``[3, H, W]`` (or ``[1, 3, H, W]`` for
batches) with values in ``[0, 1]``; preprocessing for a backbone happens inside the backbone.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from skimage import data

from dreamsuite.defaults import DEFAULT_MAX_PIXELS
from dreamsuite.errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "max_pixels_limit",
    "image_files",
    "ImageSource",
    "load_image",
    "to_pil",
    "encode_png",
    "encode_preview",
    "save_png",
    "read_png_text",
    "resize",
    "sample_image",
    "SAMPLES",
]

#: File name suffixes of the image formats the library reads (folders are scanned for these).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")

#: Licence-clean sample photographs shipped by scikit-image (public domain / CC0).
SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")

ImageSource = str | os.PathLike | bytes


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """``max_pixels`` if given, else ``$DREAMSUITE_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    if max_pixels is not None:
        return max_pixels
    raw = os.environ.get("DREAMSUITE_MAX_PIXELS", DEFAULT_MAX_PIXELS)
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(
            f"DREAMSUITE_MAX_PIXELS must be a whole number of pixels, not {raw!r}"
        ) from None


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> torch.Tensor:
    """Decode an image file or bytes into a ``[3, H, W]`` float tensor in ``[0, 1]``.

    Raises :class:`InvalidArgument` when the data is not a readable image or has more pixels
    than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`).
    """
    name = "image bytes" if isinstance(source, bytes) else f"image {os.fspath(source)!r}"
    if isinstance(source, bytes):
        if not source:
            raise InvalidArgument("image is empty: no bytes were given")
        fp: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidArgument(f"{name} does not exist or is not a file")
        fp = os.fspath(path)
    limit = max_pixels_limit(max_pixels)
    try:
        with Image.open(fp) as img:
            width, height = img.size
            if width * height > limit:
                raise InvalidArgument(
                    f"{name} is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{limit} pixels; downscale it or raise DREAMSUITE_MAX_PIXELS"
                )
            img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8).copy()
    except InvalidArgument:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(f"{name} is not a readable image ({exc})") from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their image files (:data:`IMAGE_SUFFIXES`, sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    if not found:
        raise InvalidArgument(f"no images found in {', '.join(map(str, paths))}")
    return found


def to_pil(image: torch.Tensor) -> Image.Image:
    """Convert a ``[3, H, W]`` (or ``[1, 3, H, W]``) tensor in ``[0, 1]`` to an RGB PIL image."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu()
    return Image.fromarray(array.numpy(), mode="RGB")


def encode_png(image: torch.Tensor, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of ``image`` with ``text`` stored as PNG text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def encode_preview(image: torch.Tensor, *, max_side: int = 256, max_bytes: int = 64_000) -> bytes:
    """A small JPEG of ``image``: longest side at most ``max_side``, at most ``max_bytes`` bytes."""
    pil = to_pil(image)
    scale = min(1.0, max_side / max(pil.size))
    if scale < 1.0:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))))
    for quality in (85, 70, 50, 30, 15):
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        pil = pil.resize((max(1, pil.width * 3 // 4), max(1, pil.height * 3 // 4)))
    return buffer.getvalue()


def save_png(image: torch.Tensor, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Write ``image`` as a PNG with ``text`` chunks, creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(encode_png(image, text))
    tmp.replace(path)
    return path


def read_png_text(source: ImageSource) -> dict[str, str]:
    """The PNG text chunks of a file or bytes (empty when there are none)."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    try:
        with Image.open(fp) as img:
            return {str(k): str(v) for k, v in getattr(img, "text", {}).items()}
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidArgument(f"not a readable PNG ({exc})") from None


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, 3, H, W]`` or ``[3, H, W]`` to ``size = (H, W)``."""
    squeeze = image.dim() == 3
    batch = image.unsqueeze(0) if squeeze else image
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=False)
    return out[0] if squeeze else out


def sample_image(name: str, *, size: int | None = None) -> torch.Tensor:
    """One of :data:`SAMPLES` from scikit-image as ``[3, H, W]``, optionally resized so its
    shorter side is ``size``."""
    if name not in SAMPLES:
        raise InvalidArgument(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    image = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 255
    if size is not None:
        h, w = image.shape[-2:]
        scale = size / min(h, w)
        image = resize(image, (max(1, round(h * scale)), max(1, round(w * scale)))).clamp(0, 1)
    return image
