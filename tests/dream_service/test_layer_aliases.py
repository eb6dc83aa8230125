"""Layer aliases in the dream service: a request may name Inception V3's layers in Keras
numbering (``mixed3``); the checked job carries the friendly names (``mixed_6a``) in its config,
selection and guide weights, so everything downstream (guide service, batching, provenance)
sees those only."""

from __future__ import annotations

import pytest

from dreamsuite.artifacts import open_store
from dreamsuite.engine import DreamConfig
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.errors import InvalidArgument
from dreamsuite.images import encode_png, sample_image
from services.dream.jobs import DreamSpec, ImageInput, SelectionSpec, prepare

CONFIG = DreamConfig(backbone="inception_v3", weights="random", octaves=1, steps=1,
                     maplist=Maplist((LayerTerm("mixed3"), LayerTerm("mixed5", 0.5))),
                     layer_octave_weights={"mixed5": (1.0,)})


@pytest.fixture(scope="module")
def cat() -> ImageInput:
    return ImageInput("image", data=encode_png(sample_image("chelsea", size=80)))


def test_a_prepared_job_names_layers_by_their_friendly_names(cat, tmp_path):
    spec = DreamSpec(image=cat, config=CONFIG,
                     selection=SelectionSpec(("mixed3", "mixed_6a", "mixed0"), 1, 1))
    job = prepare(spec, open_store(tmp_path), max_pixels=10**6)
    assert job.config.maplist.layers == ["mixed_6a", "mixed_6c"]
    assert job.config.layer_octave_weights == {"mixed_6c": (1.0,)}
    assert job.spec.selection.layers == ("mixed_6a", "mixed_5b")


def test_precomputed_guide_weights_may_name_aliases(cat, tmp_path):
    weights = {"mixed3": [1.0] * 768, "mixed_6c": [0.5] * 768}
    job = prepare(DreamSpec(image=cat, config=CONFIG, guide_weights=weights),
                  open_store(tmp_path), max_pixels=10**6)
    assert list(job.guide_weights) == ["mixed_6a", "mixed_6c"]
    with pytest.raises(InvalidArgument, match=r"guidance.guide_weights: no weights for layer"
                                              r"\(s\) mixed_6c"):
        prepare(DreamSpec(image=cat, config=CONFIG, guide_weights={"mixed3": [1.0] * 768}),
                open_store(tmp_path), max_pixels=10**6)
