"""Reading, writing and resizing images.

Images inside the library are float tensors of shape ``[3, H, W]`` (or ``[1, 3, H, W]`` for
batches) with values in ``[0, 1]``; preprocessing for a backbone happens inside the backbone.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from skimage import data

from dreamsuite.defaults import DEFAULT_MAX_PIXELS
from dreamsuite.errors import InvalidArgument, shorten

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "max_pixels_limit",
    "image_files",
    "ImageSource",
    "load_image",
    "check_image_header",
    "to_pil",
    "encode_png",
    "image_grid",
    "png_with_text",
    "png_size",
    "encode_preview",
    "save_png",
    "read_png_text",
    "resize",
    "sample_image",
    "SAMPLES",
]

#: The image formats the library decodes (Pillow's names), and no others: every decoder is
#: attack surface, and these are what cameras, browsers and this suite write.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
_FORMAT_NAMES = ("PNG", "JPEG", "WebP", "TIFF", "BMP", "GIF")

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


def _check_declared_size(size: tuple[int, int], name: str, limit: int) -> None:
    """Refuse an image by the size its header declares, before a byte of it is decoded."""
    width, height = size
    if width < 1 or height < 1:
        raise InvalidArgument(f"{name} is {width}x{height}: an image needs at least one pixel "
                              "on each side")
    if width * height > limit:
        raise InvalidArgument(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limit} pixels; downscale it or raise DREAMSUITE_MAX_PIXELS"
        )


def _rgb_array(img: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` uint8 pixels of the first frame (16-bit grey scaled, not clipped)."""
    if img.mode.startswith("I;16"):
        grey = (np.asarray(img).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _unreadable(name: str, exc: Exception, limit: int) -> InvalidArgument:
    """The one message for a file no accepted decoder can read."""
    if isinstance(exc, UnidentifiedImageError):  # its text names a BytesIO object: useless
        reason = (f"no decoder of {', '.join(_FORMAT_NAMES)} recognises it: another format, "
                  "or a damaged file")
    elif isinstance(exc, Image.DecompressionBombError):
        reason = f"its header declares a size far over the limit of {limit} pixels"
    else:
        reason = f"{type(exc).__name__}: {shorten(exc, 200)}"
    return InvalidArgument(f"{name} is not a readable image ({reason})")


def _open(source: ImageSource, name: str, formats: Sequence[str]) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise InvalidArgument("image is empty: no bytes were given")
        return Image.open(io.BytesIO(source), formats=formats)
    if not Path(source).is_file():
        raise InvalidArgument(f"{name} does not exist or is not a file")
    return Image.open(os.fspath(source), formats=formats)


def _name(source: ImageSource) -> str:
    return "image bytes" if isinstance(source, bytes) else f"image {shorten(os.fspath(source))!r}"


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> torch.Tensor:
    """Decode an image file or bytes into a ``[3, H, W]`` float tensor in ``[0, 1]``.

    Only :data:`IMAGE_FORMATS` are decoded (the first frame of animations and multi-page
    files). Raises :class:`InvalidArgument` when the data is not a readable image in one of
    them, whatever the decoder raised, or when its header declares more pixels than
    ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`; checked before decoding).
    """
    name = _name(source)
    limit = max_pixels_limit(max_pixels)
    try:
        with _open(source, name, IMAGE_FORMATS) as img:
            _check_declared_size(img.size, name, limit)
            array = _rgb_array(img)
    except InvalidArgument:
        raise
    except Exception as exc:  # Pillow's decoders raise anything: SyntaxError, EOFError, ...
        raise _unreadable(name, exc, limit) from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def check_image_header(source: ImageSource, *, max_pixels: int | None = None
                       ) -> tuple[int, int]:
    """``(H, W)`` from the header of an image file or bytes, without decoding its pixels: the
    refusals :func:`load_image` makes before decoding (not an image, a format it does not
    read, more pixels than ``max_pixels``). A file that passes may still fail to decode."""
    name = _name(source)
    limit = max_pixels_limit(max_pixels)
    try:
        with _open(source, name, IMAGE_FORMATS) as img:
            _check_declared_size(img.size, name, limit)
            width, height = img.size
    except InvalidArgument:
        raise
    except Exception as exc:  # Pillow's header parsers raise anything too
        raise _unreadable(name, exc, limit) from None
    return height, width


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """``(H, W)`` of PNG bytes from their header; :class:`InvalidArgument` if they are not a
    PNG."""
    if len(png) < 24 or not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise InvalidArgument("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width


def png_with_text(png: bytes, text: dict[str, str]) -> bytes:
    """``png`` with ``text`` added as iTXt chunks before its end, pixels untouched (what
    :func:`encode_png` would write for the same image, without decoding and encoding it)."""
    png_size(png)  # a PNG at all
    end = png.rfind(b"IEND")
    if end < 4:
        raise InvalidArgument("not a complete PNG image")
    chunks = b""
    for key, value in text.items():
        body = key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
        chunks += (struct.pack(">I", len(body)) + b"iTXt" + body
                   + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF))
    return png[:end - 4] + chunks + png[end - 4:]


#: zlib level of the PNGs the suite writes: at 512 px, level 1 encodes in about a third of the
#: time of Pillow's default 6 (38 against 107 ms here) for files about 10% larger; dreams and
#: one-pass answers are encoded on every request, so speed wins.
PNG_COMPRESS_LEVEL = 1


def encode_png(image: torch.Tensor, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of ``image`` with ``text`` stored as PNG text chunks (fast compression:
    :data:`PNG_COMPRESS_LEVEL`)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
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


def read_png_text(source: ImageSource, *, max_pixels: int | None = None) -> dict[str, str]:
    """The PNG text chunks of a file or bytes (empty when there are none); the same refusals
    as :func:`load_image`, for PNG only."""
    name = _name(source)
    try:
        with _open(source, name, ("PNG",)) as img:
            _check_declared_size(img.size, name, max_pixels_limit(max_pixels))
            return {str(k): str(v) for k, v in getattr(img, "text", {}).items()}
    except InvalidArgument:
        raise
    except Exception as exc:  # as in load_image: any decoder failure is the file's fault
        raise InvalidArgument(f"{name} is not a readable PNG ({type(exc).__name__}: "
                              f"{shorten(exc, 200)})") from None


def image_grid(images: torch.Tensor, *, columns: int, padding: int = 2) -> torch.Tensor:
    """``[N, 3, H, W]`` -> one ``[3, H', W']`` image: rows of ``columns`` images on white, with
    ``padding`` pixels around each (torchvision's ``make_grid`` layout, without importing
    torchvision, which costs seconds at start)."""
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = images.new_ones(c, padding + rows * (h + padding), padding + columns * (w + padding))
    for i, image in enumerate(images):
        top, left = padding + (i // columns) * (h + padding), padding + (i % columns) * (w + padding)
        grid[:, top:top + h, left:left + w] = image
    return grid


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
