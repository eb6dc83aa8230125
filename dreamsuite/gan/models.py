"""The GAN model registry: each model kind described as data, built by name.

>>> kind = get_model_kind("dcgan64")
>>> G, D = kind.build_generator(), kind.build_discriminator()      # default width
>>> kind.resolution, kind.z_dim
(64, 128)

Generators map ``z [N, z_dim]`` to ``[N, 3, R, R]`` in ``[-1, 1]``. Discriminators map
``[N, 3, R, R]`` to ``(logits [N, K], aux)``: ``forward(x, reconstruct=n, generator=g)`` treats
the first ``n`` images as real; ``aux`` is an extra loss for D on those (FastGAN's
self-supervised reconstruction) or None. A discriminator with ``batch_coupled = True`` has batch
statistics and keeps the real and generated parts of its input apart.

A *paired* kind (``dream2dream``) is no GAN: its generator maps a photo to its dream
(:mod:`~dreamsuite.gan.dream2dream`), trained on the (photo, dream) pairs of one or more data
sets, one per condition (:mod:`~dreamsuite.gan.paired`); it has no latent, no discriminator and
no fixed resolution (``resolution`` 0: it trains on crops of the data sets' own size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dreamsuite.errors import InvalidArgument, UnknownName, shorten
from dreamsuite.gan.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init
from dreamsuite.gan.dream2dream import DEFAULT_WIDTH as D2D_WIDTH
from dreamsuite.gan.dream2dream import Dream2Dream
from dreamsuite.gan.fastgan import FastGANDiscriminator, FastGANGenerator
from dreamsuite.gan.projected import ProjectedDiscriminator

__all__ = ["LOSSES", "DEFAULT_MODEL", "ModelKind", "register", "list_models", "get_model_kind"]

LOSSES = ("nonsaturating", "hinge", "pixel+perceptual")
DEFAULT_MODEL = "dcgan64"
#: Widths outside this range are refused (1 cannot make a network; 1024 would not fit).
WIDTH_RANGE = (2, 512)


@dataclass(frozen=True)
class ModelKind:
    """A GAN architecture as data: its output size, latent size, default width, loss and
    optimiser betas, and builders for its two networks (random weights from the global torch
    generator: seed it first). ``paired`` kinds have no discriminator (see the module
    docstring); their generator builder takes ``conditions=``."""

    name: str
    description: str
    resolution: int
    z_dim: int
    default_width: int
    loss: str
    generator: Callable[..., nn.Module]
    discriminator: Callable[[int], nn.Module] | None
    betas: tuple[float, float] = (0.5, 0.999)
    paired: bool = False
    #: Weight of a mode-seeking term in G's loss (:func:`dreamsuite.gan.loop.mode_seeking_loss`:
    #: grows without bound as G maps different latents to the same image); 0: off. With a
    #: ``mode_seeking_floor`` in ``(0, 1]`` it stops pushing once the samples in a batch are
    #: that share as diverse as the real images in it.
    mode_seeking: float = 0.0
    mode_seeking_floor: float = 0.0

    def check_width(self, width: int | None) -> int:
        """``width`` (or the default) if it is in range; :class:`InvalidArgument` otherwise."""
        width = self.default_width if width is None else width
        if isinstance(width, bool) or not isinstance(width, int) or not (
                WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]):
            raise InvalidArgument(f"width: {self.name} needs a whole number in "
                                  f"[{WIDTH_RANGE[0]}, {WIDTH_RANGE[1]}], not {shorten(width)!r}")
        return width

    def build_generator(self, width: int | None = None, **options) -> nn.Module:
        """The generator with random weights: ``z [N, z_dim]`` -> ``[N, 3, R, R]`` (paired
        kinds: photos and condition indices -> dreams; ``options``: ``conditions=``)."""
        return self.generator(self.check_width(width), **options)

    def build_discriminator(self, width: int | None = None) -> nn.Module:
        """The discriminator with random weights: ``[N, 3, R, R]`` -> ``(logits, aux)``."""
        if self.discriminator is None:
            raise InvalidArgument(f"model kind {self.name} has no discriminator")
        return self.discriminator(self.check_width(width))


_REGISTRY: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry (names are unique)."""
    if kind.name in _REGISTRY:
        raise ValueError(f"model kind {kind.name!r} is already registered")
    if kind.loss not in LOSSES:
        raise ValueError(f"model kind {kind.name!r}: loss must be one of {LOSSES}")
    if (kind.discriminator is None) != kind.paired:
        raise ValueError(f"model kind {kind.name!r}: a discriminator unless (only if) paired")
    if not (kind.mode_seeking >= 0 and 0 <= kind.mode_seeking_floor <= 1):
        raise ValueError(f"model kind {kind.name!r}: mode_seeking must be >= 0 and "
                         "mode_seeking_floor in [0, 1]")
    _REGISTRY[kind.name] = kind
    return kind


def list_models() -> list[str]:
    """Registered model kinds, the default first."""
    return list(_REGISTRY)


def get_model_kind(name: str | None = None) -> ModelKind:
    """The kind called ``name`` (default :data:`DEFAULT_MODEL`); :class:`UnknownName` lists
    the registered kinds otherwise."""
    try:
        return _REGISTRY[name or DEFAULT_MODEL]
    except (KeyError, TypeError):
        raise UnknownName(f"unknown GAN model {shorten(name)!r}; available: "
                          f"{', '.join(_REGISTRY)}") from None


register(ModelKind(
    name="dcgan64",
    description="DCGAN at 64 px with a spectrally normalised discriminator: the small-data "
                "baseline (trains on 2 CPU cores in minutes at the default width)",
    resolution=64, z_dim=128, default_width=32, loss="nonsaturating",
    generator=lambda w: dcgan_init(DCGANGenerator(128, w)),
    discriminator=DCGANDiscriminator,
))

for _resolution in (128, 256):
    register(ModelKind(
        name=f"fastgan{_resolution}",
        description=f"FastGAN at {_resolution} px: skip-layer excitation in G, a "
                    "self-supervised discriminator with reconstruction decoders (GPU-sized)",
        resolution=_resolution, z_dim=256, default_width=32, loss="hinge",
        generator=lambda w, r=_resolution: FastGANGenerator(256, w, r),
        discriminator=lambda w, r=_resolution: FastGANDiscriminator(w, r),
    ))

register(ModelKind(
    name="projected64",
    description="DCGAN's generator at 64 px against a projected discriminator: small heads "
                "on the frozen, pretrained EfficientNet-Lite0's features at four scales, mixed "
                "by fixed random projections (Projected GAN), and a mode-seeking term in G's "
                "loss",
    resolution=64, z_dim=128, default_width=32, loss="hinge",
    generator=lambda w: dcgan_init(DCGANGenerator(128, w)),
    discriminator=ProjectedDiscriminator,
    # Without it, G collapsed to a few images within 250 steps in every run on the demo's
    # data (the frozen features give every latent the same direction towards "real" at
    # first), recovered only after 500-1000 steps, and in one run never did. Unhinged, the
    # term kept pushing the samples' pixels apart and the patch distance (SWD) to the dreams
    # suffered; hinged at 0.8 of the data's spread, all four of the demo's claims hold.
    mode_seeking=1.0, mode_seeking_floor=0.8,
))

register(ModelKind(
    name="dream2dream",
    description="one-pass dreams: a residual image-to-image network trained on (photo, dream) "
                "pairs with pixel + perceptual (Lite0) losses; one condition per data set",
    resolution=0, z_dim=0, default_width=D2D_WIDTH, loss="pixel+perceptual",
    generator=lambda w, conditions=1: Dream2Dream(width=w, conditions=conditions),
    discriminator=None, betas=(0.9, 0.99), paired=True,
))
