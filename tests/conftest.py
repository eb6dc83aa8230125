"""Shared fixtures of the engine tests: the embedded backbone and small sample images.

Everything here is session-scoped and read-only: tests that need to change an image clone it.
"""

from __future__ import annotations

import pytest
import torch

from dreamsuite.backbones import Backbone, get_backbone
from dreamsuite.images import sample_image

#: The embedded backbone with real ImageNet weights; every dream test uses it.
EMBEDDED = "efficientnet_lite0"


@pytest.fixture(scope="session")
def lite0() -> Backbone:
    """EfficientNet-Lite0 with its real (embedded) weights, on the CPU."""
    return get_backbone(EMBEDDED, device="cpu")


@pytest.fixture(scope="session")
def chelsea() -> torch.Tensor:
    """scikit-image's cat, shorter side 96 px, ``[3, 96, 144]``."""
    return sample_image("chelsea", size=96)


@pytest.fixture(scope="session")
def coffee() -> torch.Tensor:
    """scikit-image's espresso cup, shorter side 96 px, ``[3, 96, 128]``."""
    return sample_image("coffee", size=96)


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """scikit-image's astronaut, ``[3, 96, 96]``."""
    return sample_image("astronaut", size=96)


@pytest.fixture(scope="session")
def rocket() -> torch.Tensor:
    """scikit-image's rocket, shorter side 96 px."""
    return sample_image("rocket", size=96)
