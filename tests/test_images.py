"""dreamsuite.images: decoding with clear errors and a pixel limit, PNG text chunks, samples."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from dreamsuite.errors import InvalidArgument
from dreamsuite.images import (
    SAMPLES,
    encode_png,
    load_image,
    read_png_text,
    sample_image,
    save_png,
)


def _png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_round_trip_keeps_pixels_and_text(tmp_path):
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 24, 40, generator=gen) * 255).round() / 255
    path = save_png(image, tmp_path / "sub" / "x.png", {"key": "value ü"})
    loaded = load_image(path)
    assert loaded.shape == (3, 24, 40) and loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, image, atol=1e-6, rtol=0)
    assert read_png_text(path) == {"key": "value ü"}
    assert read_png_text(encode_png(image)) == {}


def test_grey_and_rgba_images_load_as_rgb():
    for mode in ("L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (8, 6)).save(buffer, format="PNG")
        assert load_image(buffer.getvalue()).shape == (3, 6, 8)


@pytest.mark.parametrize(
    "data",
    [b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["garbage", "png-signature-only"],
)
def test_unreadable_bytes_are_refused(data):
    with pytest.raises(InvalidArgument, match="not a readable image"):
        load_image(data)


def test_truncated_png_is_refused(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(_png_bytes(64, 64)[:60])
    with pytest.raises(InvalidArgument) as info:
        load_image(path)
    assert "cut.png" in str(info.value) and "not a readable image" in str(info.value)


def test_empty_bytes_and_missing_files_are_named(tmp_path):
    with pytest.raises(InvalidArgument, match="empty"):
        load_image(b"")
    with pytest.raises(InvalidArgument) as info:
        load_image(tmp_path / "nowhere.png")
    assert "nowhere.png" in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(InvalidArgument, match="not a file"):
        load_image(tmp_path)


def test_pixel_limit_from_argument_and_environment(monkeypatch):
    data = _png_bytes(40, 30)  # 1200 pixels
    assert load_image(data, max_pixels=1200).shape == (3, 30, 40)
    with pytest.raises(InvalidArgument) as info:
        load_image(data, max_pixels=1199)
    message = str(info.value)
    assert "40x30" in message and "1199" in message and "DREAMSUITE_MAX_PIXELS" in message

    monkeypatch.setenv("DREAMSUITE_MAX_PIXELS", "1000")
    with pytest.raises(InvalidArgument, match="over the limit of 1000"):
        load_image(data)
    assert load_image(data, max_pixels=5000).shape == (3, 30, 40)  # the argument wins
    monkeypatch.setenv("DREAMSUITE_MAX_PIXELS", "4k")
    with pytest.raises(InvalidArgument, match="DREAMSUITE_MAX_PIXELS"):
        load_image(data)


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_come_from_scikit_image_resized(name):
    image = sample_image(name, size=64)
    assert image.dim() == 3 and image.shape[0] == 3
    assert min(image.shape[-2:]) == 64
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.std()) > 0.05  # a photograph, not a blank


def test_unknown_sample_lists_the_samples():
    with pytest.raises(InvalidArgument) as info:
        sample_image("lena")
    for name in SAMPLES:
        assert name in str(info.value)


def test_text_is_added_to_a_png_without_touching_its_pixels():
    from PIL import Image

    from dreamsuite.errors import InvalidArgument
    from dreamsuite.images import encode_png, load_image, png_size, png_with_text

    image = torch.rand(3, 13, 21, generator=torch.Generator().manual_seed(0))
    png = encode_png(image)
    tagged = png_with_text(png, {"dreamsuite": '{"model": "d2d", "ünïcode": 1}', "b": "2"})
    assert png_size(tagged) == (13, 21)
    opened = Image.open(io.BytesIO(tagged))
    opened.load()  # every chunk's CRC is checked on the way
    assert opened.text == {"dreamsuite": '{"model": "d2d", "ünïcode": 1}', "b": "2"}
    assert torch.equal(load_image(tagged), load_image(png))
    for bad in (b"", b"GIF89a" + bytes(40), png[:20]):
        with pytest.raises(InvalidArgument):
            png_with_text(bad, {"k": "v"})
