"""Write the hostile-image corpus ``tests/data/hostile-images/`` (run once; the files are kept).

    .venv/bin/python tests/data/make_hostile_images.py

Every file comes from small images drawn with a fixed seed, so running this again writes the
same corpus (given the same Pillow). File names say what a service must do with them:

- ``valid-*``: a readable image at least 32 px on each side, in an accepted format (PNG, JPEG,
  WebP, TIFF, BMP, GIF) and an unusual mode: dreams and guide statistics succeed.
- ``edge-*``: readable, but too small, too thin or too big for some requests: OK or
  INVALID_ARGUMENT, depending on the service and its pixel limit.
- ``bad-*``: not a readable image in an accepted format (truncated, garbled, absurd sizes,
  other formats): INVALID_ARGUMENT everywhere.
- ``mut-*``: seeded random byte mutations of valid files: OK or INVALID_ARGUMENT.

Each file is under 200 KB.
"""

from __future__ import annotations

import io
import random
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20240611
OUT = Path(__file__).resolve().parent / "hostile-images"
MAX_BYTES = 200_000
SIZE = (48, 40)  # width, height of the base images

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- building blocks ---------------------------------------------------------------------------


def picture(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> Image.Image:
    """A smooth gradient with noise: compresses like a photograph, decodes unambiguously."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(1, w - 1), y * 255 / max(1, h - 1), (x + y) % 256], axis=-1)
    noisy = base + rng.normal(0, 12, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="RGB")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk; ``crc`` overrides the correct checksum."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    return struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)


def zeros_idat(row_bytes: int, rows: int) -> bytes:
    """Compressed all-zero scanlines (filter byte 0), streamed: a bomb needs no memory here."""
    packer = zlib.compressobj(9)
    line = bytes(row_bytes + 1)
    out = [packer.compress(line) for _ in range(rows)]
    out.append(packer.flush())
    return b"".join(out)


def png(header: bytes, idat: bytes, *, before: bytes = b"", end: bool = True) -> bytes:
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + before + chunk(b"IDAT", idat)
            + (chunk(b"IEND", b"") if end else b""))


def raw_png(width: int, height: int, depth: int, color: int, pixels: bytes) -> bytes:
    """A PNG of filter-0 scanlines ``pixels`` (no checks: any depth/colour combination)."""
    row = len(pixels) // height
    lines = b"".join(b"\x00" + pixels[i * row:(i + 1) * row] for i in range(height))
    return png(ihdr(width, height, depth, color), zlib.compress(lines))


def png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """``(offset, type)`` of every chunk of a well-formed PNG."""
    out, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((pos, kind))
        pos += 12 + length
    return out


def poke(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


# --- the corpus ------------------------------------------------------------------------------


def valid(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Readable RGB images in every accepted format, animations too."""
    rgb = picture(rng)
    yield "valid-rgb.png", encode(rgb, "PNG")
    yield "valid-rgb.jpg", encode(rgb, "JPEG", quality=90)
    yield "valid-progressive.jpg", encode(rgb, "JPEG", progressive=True)
    yield "valid-grey.jpg", encode(rgb.convert("L"), "JPEG")
    yield "valid-cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG")
    yield "valid-rgb.webp", encode(rgb, "WEBP", quality=80)
    yield "valid-rgba-lossless.webp", encode(rgb.convert("RGBA"), "WEBP", lossless=True)
    yield "valid-rgb.bmp", encode(rgb, "BMP")
    yield "valid-1bit.bmp", encode(rgb.convert("1"), "BMP")
    yield "valid-palette.bmp", encode(rgb.convert("P"), "BMP")
    yield "valid-palette.gif", encode(rgb, "GIF")
    frames = [picture(rng) for _ in range(3)]
    yield "valid-animated.gif", encode(frames[0], "GIF", save_all=True,
                                       append_images=frames[1:], duration=40, loop=0)
    yield "valid-animated.png", encode(frames[0], "PNG", save_all=True,
                                       append_images=frames[1:], duration=40)
    yield "valid-animated.webp", encode(frames[0], "WEBP", save_all=True,
                                        append_images=frames[1:], duration=40)


def valid_modes(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Readable images in unusual modes: grey+alpha, palettes, 16 bits, CMYK, LAB, floats."""
    rgb = picture(rng)
    yield "valid-la.png", encode(rgb.convert("LA"), "PNG")
    palette = rgb.convert("P")
    yield "valid-palette-transparent.png", encode(palette, "PNG", transparency=0)
    grey16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(">u2")
    yield "valid-16bit-grey.png", raw_png(*SIZE, 16, 0, grey16.tobytes())
    rgb16 = (np.asarray(rgb, dtype=np.uint16) * 257).astype(">u2")
    yield "valid-16bit-rgb.png", raw_png(*SIZE, 16, 2, rgb16.tobytes())
    rgba16 = np.concatenate([rgb16, np.full((*rgb16.shape[:2], 1), 65535, ">u2")], axis=-1)
    yield "valid-16bit-rgba.png", raw_png(*SIZE, 16, 6, rgba16.tobytes())
    yield "valid-rgb.tif", encode(rgb, "TIFF")
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"):
        yield f"valid-{compression}.tif", encode(rgb, "TIFF", compression=compression)
    yield "valid-group4-1bit.tif", encode(rgb.convert("1"), "TIFF", compression="group4")
    yield "valid-cmyk.tif", encode(rgb.convert("CMYK"), "TIFF")
    floats = np.asarray(rgb.convert("L"), dtype=np.float32) / 255
    floats[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    yield "valid-float-nan.tif", encode(Image.fromarray(floats, mode="F"), "TIFF")
    yield "valid-int32.tif", encode(rgb.convert("I"), "TIFF")
    yield "valid-16bit.tif", encode(rgb.convert("I;16"), "TIFF")
    yield "valid-lab.tif", encode(rgb.convert("LAB"), "TIFF")
    yield "valid-ycbcr.tif", encode(rgb.convert("YCbCr"), "TIFF")
    yield "valid-1bit.png", encode(rgb.convert("1"), "PNG")
    frames = [picture(rng) for _ in range(3)]
    yield "valid-multipage.tif", encode(frames[0], "TIFF", save_all=True,
                                        append_images=frames[1:])


def edge(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    yield "edge-1x1.png", encode(picture(rng, (1, 1)), "PNG")
    yield "edge-16x16.png", encode(picture(rng, (16, 16)), "PNG")
    yield "edge-20000x1.png", encode(picture(rng, (20000, 1)), "PNG")
    yield "edge-1x20000.gif", encode(Image.new("L", (1, 20000), 128), "GIF")
    yield "edge-600x40.jpg", encode(picture(rng, (600, 40)), "JPEG")
    yield "edge-400x400-flat.png", encode(Image.new("RGB", (400, 400), (30, 90, 200)), "PNG")
    # 4096 x 4096 = the default pixel limit exactly: a flat PNG of a few kilobytes.
    yield "edge-4096x4096-1bit.png", png(ihdr(4096, 4096, 1, 0), zeros_idat(512, 4096))


def absurd_sizes() -> Iterator[tuple[str, bytes]]:
    tiny = zlib.compress(b"\x00" * 4)
    yield "bad-png-2147483647-square.png", png(ihdr(2**31 - 1, 2**31 - 1), tiny)
    yield "bad-png-4294967295-wide.png", png(ihdr(2**32 - 1, 1), tiny)
    yield "bad-png-zero-width.png", png(ihdr(0, 40), tiny)
    yield "bad-png-zero-height.png", png(ihdr(40, 0), tiny)
    # 20000 x 20000 one-bit: 400 megapixels in about 60 KB (Pillow's decompression-bomb size).
    yield "bad-png-bomb-20000x20000.png", png(ihdr(20000, 20000, 1, 0), zeros_idat(2500, 20000))
    # Declared 8000 x 8000 but only a few rows of data.
    yield "bad-png-8000x8000-short.png", png(ihdr(8000, 8000, 1, 0), zeros_idat(1000, 8))
    yield "bad-png-bit-depth-3.png", png(ihdr(8, 8, 3, 0), tiny)
    yield "bad-png-colour-type-9.png", png(ihdr(8, 8, 8, 9), tiny)
    gif = encode(Image.new("P", (40, 40)), "GIF")
    yield "bad-gif-65535x65535.gif", poke(gif, 6, struct.pack("<HH", 65535, 65535))
    # A zero logical screen around a 40 x 40 frame: Pillow reads the frame.
    yield "mut-gif-zero-screen.gif", poke(gif, 6, struct.pack("<HH", 0, 0))
    bmp = encode(Image.new("RGB", (40, 40)), "BMP")
    yield "bad-bmp-huge.bmp", poke(bmp, 18, struct.pack("<ii", 2**31 - 1, 2**31 - 1))
    yield "bad-bmp-zero-width.bmp", poke(bmp, 18, struct.pack("<i", 0))
    yield "bad-bmp-negative-width.bmp", poke(bmp, 18, struct.pack("<i", -40))
    yield "bad-bmp-bits-per-pixel-7.bmp", poke(bmp, 28, struct.pack("<H", 7))
    jpeg = encode(Image.new("RGB", (40, 40), (1, 2, 3)), "JPEG")
    sof = jpeg.index(b"\xff\xc0")
    yield "bad-jpeg-65535x65535.jpg", poke(jpeg, sof + 5, struct.pack(">HH", 65535, 65535))
    yield "bad-jpeg-zero-height.jpg", poke(jpeg, sof + 5, struct.pack(">H", 0))
    yield "bad-jpeg-zero-components.jpg", poke(jpeg, sof + 9, b"\x00")


def _tiff_tag(data: bytes, tag: int) -> int:
    """Offset of the value field of ``tag`` in the first IFD of a little-endian TIFF."""
    ifd = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[ifd:ifd + 2])[0]
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == tag:
            return entry + 8
    raise KeyError(tag)


def broken_tiffs(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    tif = encode(picture(rng), "TIFF")
    width, length, compression, strips, counts = 256, 257, 259, 273, 279
    yield "bad-tiff-compression-99.tif", poke(tif, _tiff_tag(tif, compression),
                                              struct.pack("<H", 99))
    yield "bad-tiff-compression-jpeg2000.tif", poke(tif, _tiff_tag(tif, compression),
                                                    struct.pack("<H", 34712))
    yield "bad-tiff-huge-width.tif", poke(tif, _tiff_tag(tif, width),
                                          struct.pack("<I", 2**31 - 1))
    yield "bad-tiff-zero-length.tif", poke(tif, _tiff_tag(tif, length), struct.pack("<I", 0))
    yield "bad-tiff-strip-beyond-file.tif", poke(tif, _tiff_tag(tif, strips),
                                                 struct.pack("<I", 2**31))
    yield "mut-tiff-strip-bytes-huge.tif", poke(tif, _tiff_tag(tif, counts),
                                                struct.pack("<I", 2**31))
    yield "bad-tiff-no-ifd.tif", poke(tif, 4, struct.pack("<I", 0))
    lzw = encode(picture(rng), "TIFF", compression="tiff_lzw")
    yield "bad-tiff-lzw-garbage.tif", lzw[:200] + bytes(rng.integers(0, 256, 1500,
                                                                     dtype=np.uint8)) + lzw[1700:]


def broken_pngs(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    good = encode(picture(rng), "PNG")
    (ihdr_at, _), (idat_at, _) = png_chunks(good)[0], png_chunks(good)[1]
    yield "bad-png-ihdr-type-garbled.png", poke(good, ihdr_at + 4, b"IxDR")
    yield "bad-png-ihdr-crc.png", poke(good, ihdr_at + 8 + 13, b"\xde\xad\xbe\xef")
    yield "mut-png-idat-crc.png", poke(good, len(good) - 16, b"\xde\xad\xbe\xef")
    yield "bad-png-idat-type-garbled.png", poke(good, idat_at + 4, b"iDxT")
    yield "bad-png-idat-zlib-garbage.png", png(ihdr(*SIZE), b"\x78\x9c" + b"\xff" * 300)
    yield "mut-png-chunk-length-huge.png", poke(good, idat_at, struct.pack(">I", 2**31 - 1))
    yield "bad-png-no-idat.png", PNG_SIGNATURE + chunk(b"IHDR", ihdr(*SIZE)) + chunk(b"IEND", b"")
    yield "bad-png-two-ihdr.png", poke(good, idat_at, chunk(b"IHDR", ihdr(8, 8))[:12])
    # 1 MB of zTXt from 1 KB: over Pillow's text-chunk limit.
    ztxt = chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 2_000_000, 9))
    yield "bad-png-ztxt-bomb.png", png(ihdr(*SIZE), zlib.compress(bytes(SIZE[1] * (1 + 3 * SIZE[0]))),
                                       before=ztxt)
    yield "mut-png-palette-missing.png", raw_png(8, 8, 8, 3, bytes(64))
    yield "bad-png-signature-only.png", PNG_SIGNATURE
    # The decoder meets garbage where the next chunk header should be (SyntaxError in Pillow).
    length = struct.unpack(">I", good[idat_at:idat_at + 4])[0]
    yield "bad-png-idat-short.png", poke(good, idat_at, struct.pack(">I", length - 8))
    idat = good[idat_at + 8:idat_at + 8 + length]
    yield "bad-png-idat-split-garbage.png", (good[:idat_at] + chunk(b"IDAT", idat[:200])
                                             + b"\x00\x01\x02\x03\xde\xad"
                                             + chunk(b"IDAT", idat[200:]) + chunk(b"IEND", b""))


def truncations(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    rgb = picture(rng)
    sources = {"png": encode(rgb, "PNG"), "jpg": encode(rgb, "JPEG"),
               "webp": encode(rgb, "WEBP"), "tif": encode(rgb, "TIFF"),
               "bmp": encode(rgb, "BMP"), "gif": encode(rgb, "GIF")}
    for ext, data in sources.items():
        yield f"bad-truncated-header.{ext}", data[:12]
        yield f"mut-truncated-half.{ext}", data[:len(data) // 2]


def broken_headers(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Random bytes over each format's first 16 bytes after the magic number."""
    rgb = picture(rng)
    for ext, fmt, magic in (("png", "PNG", 8), ("jpg", "JPEG", 2), ("webp", "WEBP", 4),
                            ("tif", "TIFF", 4), ("bmp", "BMP", 2), ("gif", "GIF", 6)):
        data = encode(rgb, fmt)
        noise = bytes(rng.integers(0, 256, 16, dtype=np.uint8))
        yield f"mut-header-noise.{ext}", poke(data, magic, noise)


def mutations(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Seeded flips, insertions and deletions of valid small images in every accepted format."""
    rgb = picture(rng)
    flips = random.Random(SEED)
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("tif", "TIFF"),
                     ("bmp", "BMP"), ("gif", "GIF")):
        data = bytearray(encode(rgb, fmt))
        for _ in range(8):
            data[flips.randrange(len(data))] = flips.randrange(256)
        yield f"mut-flips.{ext}", bytes(data)
        cut = flips.randrange(16, len(data) - 16)
        yield f"mut-splice.{ext}", bytes(data[:cut] + data[cut + flips.randrange(1, 16):])


def other_formats(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Readable by Pillow, but not an accepted format."""
    rgb = picture(rng)
    yield "bad-other.ico", encode(rgb, "ICO")
    yield "bad-other.pcx", encode(rgb, "PCX")
    yield "bad-other.tga", encode(rgb, "TGA")
    yield "bad-other.eps", encode(rgb, "EPS")
    yield "bad-other.ppm", encode(rgb, "PPM")
    yield "bad-other.sgi", encode(rgb, "SGI")
    yield "bad-other.dib", encode(rgb, "DIB")
    yield "bad-other.xbm", encode(rgb.convert("1"), "XBM")
    yield "bad-other.pdf", encode(rgb, "PDF")
    yield "bad-garbage.bin", bytes(rng.integers(0, 256, 4096, dtype=np.uint8))
    yield "bad-empty.bin", b""
    yield "bad-text.txt", b"this is not an image\n" * 10


GROUPS: tuple[Callable[[np.random.Generator], Iterator[tuple[str, bytes]]], ...] = (
    valid, valid_modes, edge, lambda rng: absurd_sizes(), broken_tiffs, broken_pngs, truncations,
    broken_headers, mutations, other_formats,
)


def corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(SEED)
    files: dict[str, bytes] = {}
    for group in GROUPS:
        for name, data in group(rng):
            assert name not in files, name
            assert len(data) < MAX_BYTES, (name, len(data))
            files[name] = data
    return files


def main() -> None:
    files = corpus()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()
