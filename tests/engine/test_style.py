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
    _Pyramid,
    _yiq,
    content_distance,
    features_transform,
    gram,
    image_grams,
    preserve_color,
    pyramid_levels,
    reconstruct,
    style_distance,
    stylize,
)
from dreamsuite.errors import Cancelled, InvalidArgument, UnknownName
from dreamsuite.images import resize, sample_image


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


@pytest.mark.parametrize("transform", ["gram", "pyramid"])
def test_tiles_accumulate_the_grams_and_gradient_of_the_whole_image(transform):
    """Global statistics over tiles: the Grams, and for the softmax (``pyramid``) also its
    temperature and normaliser, are the whole image's."""
    lite0 = get_backbone("efficientnet_lite0", device="cpu")
    layers = ["stem", "block_1", "block_5"]
    net = _Net(lite0, layers)
    image = lite0.prepare(sample_image("rocket", size=160)[None])
    whole = image_grams(net, image, layers, transform, 2.0)
    tiled = image_grams(net, image, layers, transform, 2.0, tile=64, halo=64)
    for layer in layers:
        assert torch.allclose(tiled[layer], whole[layer], rtol=1e-4,
                              atol=1e-5 * whole[layer].abs().max())
    targets = image_grams(net, lite0.prepare(sample_image("coffee", size=96)[None]), layers,
                          transform, 2.0)
    kw = {"style_weight": 10.0, "content_weight": 1.0, "tv_weight": 0.5}

    def loss(tile):
        fn = _Loss(net, transform, 2.0, dict.fromkeys(layers, 1.0), targets, "block_1",
                   tile=tile, halo=64, **kw)
        fn.prepare_content(image.flip(-1))
        return fn(image)

    (value, grad), (tiled_value, tiled_grad) = loss(0), loss(64)
    assert tiled_value == pytest.approx(value, rel=1e-4)
    assert torch.allclose(tiled_grad, grad, rtol=1e-3, atol=1e-4 * grad.abs().max())


@pytest.mark.parametrize("transform", ["gram", "softmax"])
def test_grams_and_softmax_do_not_depend_on_the_memory_layout(transform):
    """The backbones' activations are channels-last; the statistics read them in place (no
    copy) and must equal those of the same tensor in the standard layout, gradient included."""
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 7, 6, generator=generator) * 3
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = feats.contiguous(memory_format=layout).requires_grad_()
        smoothed = features_transform(x, transform, 2.0)
        assert smoothed.shape == x.shape
        g = gram(smoothed)
        (grad,) = torch.autograd.grad((g * g).sum(), x)
        results.append((smoothed.contiguous(), g, grad.contiguous()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    flat = results[0][0].flatten(2)
    torch.testing.assert_close(results[0][1], flat @ flat.transpose(1, 2) / 42)
    if transform == "softmax":  # each image's values: a softmax times their count
        torch.testing.assert_close(results[0][0].sum(dim=(1, 2, 3)),
                                   torch.full((2,), 210.0))


def test_the_pyramid_levels_get_the_adjoint_of_the_pixel_gradient():
    """Each level's gradient is that of the loss through the pyramid (float64 autograd), the
    initial pyramid is the initial image, and projecting keeps the pixels in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 37, 50, generator=generator, dtype=torch.float64)
    assert pyramid_levels((256, 384)) == 5 and pyramid_levels((37, 50)) == 2
    pyramid = _Pyramid(x0, 3)
    assert [tuple(level.shape[-2:]) for level in pyramid.levels] == [(37, 50), (18, 25), (9, 12)]
    assert torch.equal(pyramid.image(), x0)
    with torch.no_grad():
        for level in pyramid.levels[1:]:
            level.normal_(0, 0.3, generator=generator)
    weights = torch.randn(x0.shape, generator=generator, dtype=torch.float64)

    def loss(x):
        return ((x - 0.5) ** 2 * weights).sum()

    reference = [level.detach().clone().requires_grad_() for level in pyramid.levels]
    expected = torch.autograd.grad(loss(pyramid._synthesise(reference)), reference)
    x = pyramid.image().requires_grad_()
    pyramid.set_grads(torch.autograd.grad(loss(x), x)[0])
    for level, grad in zip(pyramid.levels, expected, strict=True):
        assert torch.allclose(level.grad, grad, rtol=1e-10, atol=1e-12)
    # A smooth (constant) pixel gradient: each coarse pixel sums the pixels it covers.
    pyramid.set_grads(torch.ones_like(x0))
    assert float(pyramid.levels[2].grad.mean()) == pytest.approx(37 * 50 / (9 * 12))
    pyramid.project()
    image = pyramid.image()
    assert image.min() >= -1e-12 and image.max() <= 1 + 1e-12


def test_the_pyramid_stylizes_further_at_less_content_cost_on_another_network(content, style):
    """Optimised as a pyramid, the result is nearer the style and nearer the content on a
    network never optimised against than the pixel-space softmax transform's."""
    lite1 = get_backbone("efficientnet_lite1", device="cpu")
    pixels = stylize(content, [(style, 1.0)], StyleConfig(transform="softmax", iterations=25),
                     device="cpu")
    pyramid = stylize(content, [(style, 1.0)], StyleConfig(transform="pyramid",
                                                           content_weight=10.0, iterations=25),
                      device="cpu")
    assert style_distance(lite1, pyramid, style) < 0.95 * style_distance(lite1, pixels, style)
    assert content_distance(lite1, pyramid, content) < content_distance(lite1, pixels, content)
    assert StyleConfig().transform == "pyramid"


def test_the_pyramid_never_climbs_away_from_its_start():
    """A case where L-BFGS's unit first step over the pyramid overshot (the loss jumped from
    458 to 1649 and ended near 900, a fifth of the pixels clamped): every step must descend."""
    content = resize(sample_image("chelsea"), (160, 240))
    losses = []
    stylize(content, [(sample_image("astronaut"), 1.0)],
            StyleConfig(transform="pyramid", content_weight=10.0, iterations=10), device="cpu",
            progress=lambda p: losses.append(p.loss))
    assert losses[-1] < 0.8 * losses[0]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:], strict=False)), losses


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


def test_lbfgs_runs_in_float32_on_cuda_and_adam_under_autocast():
    """L-BFGS's curvature pairs and line search would follow fp16 rounding: only Adam runs
    under autocast on CUDA (a stand-in backbone on a CUDA device; nothing runs)."""
    from types import SimpleNamespace

    from dreamsuite.engine.style import _Net

    for device, optimizer, autocast in (("cuda", "lbfgs", False), ("cuda", "adam", True),
                                        ("cpu", "adam", False)):
        backbone = SimpleNamespace(device=torch.device(device), extractor=lambda layers: None)
        assert _Net(backbone, ["a"], optimizer).autocast is autocast
