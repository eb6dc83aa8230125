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


@pytest.mark.parametrize("fields, message", [
    ({"size": 5}, "size must be between"), ({"holdout_fraction": math.nan}, "holdout_fraction"),
    ({"crops_per_photo": 10_000}, "crops_per_photo"), ({"max_images": -1}, "max_images"),
])
def test_a_data_set_of_bad_numbers_is_refused_before_any_photo_is_read(tmp_path, fields, message):
    """The numbers were checked after every photo of the source had been decoded: here the
    source (a folder on a server that reads none) would be refused first."""
    from dreamsuite.artifacts import open_store
    from dreamsuite.v1 import dream_pb2
    from services.gan.datasets import DatasetBuilder, DatasetRequest

    builder = DatasetBuilder(open_store(tmp_path / "store"), metrics=None, dream_target=None)
    request = DatasetRequest(source=("folder", str(tmp_path)), template=dream_pb2.DreamRequest(),
                             **fields)
    with pytest.raises(InvalidArgument, match=message):
        builder._plan(request)
