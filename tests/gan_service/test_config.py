"""The GAN service's flags refuse what cannot work, NaN included (it passes ``x < 0``)."""

from __future__ import annotations

import math

import pytest

from dreamsuite.errors import InvalidArgument
from services.gan.config import GanServiceConfig


@pytest.mark.parametrize("field, value, flag", [
    ("stop_grace", math.nan, "--stop-grace"), ("stop_grace", -1.0, "--stop-grace"),
    ("stop_grace", math.inf, "--stop-grace"),
    ("torchserve_resync", math.nan, "--torchserve-resync"),
    ("torchserve_resync", -5.0, "--torchserve-resync"),
    ("torchserve_resync", math.inf, "--torchserve-resync"),
    ("torchserve_drain", math.nan, "--torchserve-drain"),
])
def test_a_bad_number_is_refused_by_its_flag(field, value, flag):
    with pytest.raises(InvalidArgument, match=flag):
        GanServiceConfig(**{field: value}).validate()


def test_the_defaults_and_sane_values_pass():
    GanServiceConfig().validate()
    GanServiceConfig(stop_grace=0, torchserve_resync=30, torchserve_drain=0).validate()
