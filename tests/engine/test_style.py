"""Content reconstruction and style transfer: what each depth keeps, losses that fall on a
network not optimised against, colour preservation, global Gram statistics over tiles."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.backbones import get_backbone
from dreamsuite.engine.style import (
    ReconstructConfig,
    StyleConfig,
    _Loss,
    _Net,
    _yiq,
    content_distance,
    image_grams,
    preserve_color,
    reconstruct,
    style_distance,
    stylize,
)
from dreamsuite.errors import Cancelled, InvalidArgument, UnknownName
from dreamsuite.images import sample_image


@pytest.fixture(scope="module")
def content():
    return sample_image("coffee", size=64)


@pytest.fixture(scope="module")
def style():
    return sample_image("chelsea", size=64)


def test_deeper_layers_keep_less_of_the_pixels(content):
    images = reconstruct(content, ["stem", "block_3", "block_10"],
                         ReconstructConfig(iterations=50), device="cpu")
    error = {layer: float((image - content).abs().mean()) for layer, image in images.items()}
    assert list(images) == ["stem", "block_3", "block_10"]
    assert error["stem"] < 0.2  # the shallow layer gives the photo back
    assert error["stem"] < error["block_3"] < error["block_10"]
    noise = torch.rand(content.shape, generator=torch.Generator().manual_seed(0))
    assert error["stem"] < 0.6 * float((noise - content).abs().mean())


def test_style_reconstruction_matches_grams_not_pixels(style):
    lite0 = get_backbone("efficientnet_lite0", device="cpu")
    image = reconstruct(style, ["block_1"], ReconstructConfig(mode="style", iterations=40),
                        device="cpu")["block_1"]
    noise = torch.rand(style.shape, generator=torch.Generator().manual_seed(0))
    assert (style_distance(lite0, image, style, ["block_1"])
            < 0.2 * style_distance(lite0, noise, style, ["block_1"]))


def test_style_transfer_lowers_the_style_loss_also_on_another_network(content, style):
    config = StyleConfig(iterations=25)
    out = stylize(content, [(style, 1.0)], config, device="cpu")
    lite0 = get_backbone("efficientnet_lite0", device="cpu")
    lite1 = get_backbone("efficientnet_lite1", device="cpu")  # never optimised against
    assert style_distance(lite0, out, style) < 0.5 * style_distance(lite0, content, style)
    assert style_distance(lite1, out, style) < 0.9 * style_distance(lite1, content, style)
    # The content stays: nearer the content image than the style image is.
    assert content_distance(lite1, out, content) < content_distance(
        lite1, torch.nn.functional.interpolate(style[None], content.shape[-2:])[0], content)


def test_blended_styles_and_the_same_seed_give_the_same_image(content, style):
    other = sample_image("astronaut", size=64)
    config = StyleConfig(iterations=5, init="noise", seed=3)
    a = stylize(content, [(style, 1.0), (other, 0.3)], config, device="cpu")
    b = stylize(content, [(style, 1.0), (other, 0.3)], config, device="cpu")
    c = stylize(content, [(style, 1.0)], config, device="cpu")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_colour_preservation_keeps_the_content_chroma(content, style):
    out = stylize(content, [(style, 1.0)], StyleConfig(iterations=5, preserve_color=True),
                  device="cpu")
    _, i_out, q_out = _yiq(out)
    _, i_c, q_c = _yiq(content)
    assert (i_out - i_c).abs().mean() < 0.01 and (q_out - q_c).abs().mean() < 0.01
    plain = preserve_color(style, content)
    assert (_yiq(plain)[0] - _yiq(style)[0]).abs().mean() < 0.02  # its luminance stays


def test_tiles_accumulate_the_grams_and_gradient_of_the_whole_image():
    lite0 = get_backbone("efficientnet_lite0", device="cpu")
    layers = ["stem", "block_1", "block_5"]
    net = _Net(lite0, layers)
    image = lite0.prepare(sample_image("rocket", size=160)[None])
    whole = image_grams(net, image, layers, "gram", 1.0)
    tiled = image_grams(net, image, layers, "gram", 1.0, tile=64, halo=64)
    for layer in layers:
        assert torch.allclose(tiled[layer], whole[layer], rtol=1e-4,
                              atol=1e-5 * whole[layer].abs().max())
    targets = image_grams(net, lite0.prepare(sample_image("coffee", size=96)[None]), layers,
                          "gram", 1.0)
    kw = {"style_weight": 10.0, "content_weight": 1.0, "tv_weight": 0.5}

    def loss(tile):
        fn = _Loss(net, "gram", 1.0, dict.fromkeys(layers, 1.0), targets, "block_1",
                   tile=tile, halo=64, **kw)
        fn.prepare_content(image.flip(-1))
        return fn(image)

    (value, grad), (tiled_value, tiled_grad) = loss(0), loss(64)
    assert tiled_value == pytest.approx(value, rel=1e-4)
    assert torch.allclose(tiled_grad, grad, rtol=1e-3, atol=1e-4 * grad.abs().max())


def test_cancel_and_bad_input(content, style):
    with pytest.raises(Cancelled):
        stylize(content, [(style, 1.0)], StyleConfig(iterations=50), device="cpu",
                should_cancel=lambda: True)
    with pytest.raises(InvalidArgument, match="transform"):
        stylize(content, [(style, 1.0)], StyleConfig(transform="fourier"), device="cpu")
    with pytest.raises(InvalidArgument, match="style weights"):
        stylize(content, [(style, 0.0)], StyleConfig(), device="cpu")
    with pytest.raises(UnknownName, match="block_99"):
        stylize(content, [(style, 1.0)], StyleConfig(content_layer="block_99"), device="cpu")
    with pytest.raises(UnknownName):
        reconstruct(content, ["block_99"], device="cpu")
    with pytest.raises(InvalidArgument, match="iterations"):
        reconstruct(content, ["stem"], ReconstructConfig(iterations=0), device="cpu")
