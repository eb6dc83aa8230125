"""An artifact's object metadata stays under S3's 2 KiB whatever the request held (a put over
it would fail and lose the dream); what does not fit stays in the PNG's provenance."""

from __future__ import annotations

from dreamsuite.engine import DreamConfig
from services.dream.outputs import METADATA_BUDGET, artifact_metadata


def _size(meta: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())


def test_long_octave_weight_lists_are_dropped_from_the_metadata_not_the_artifact():
    config = DreamConfig(octaves=16, layer_octave_weights={
        f"block_{i}": tuple(0.123456789 * j for j in range(16)) for i in range(16)})
    provenance = {"dreamsuite": "0.1.0", "input_sha256": "ab" * 32, "input": "file:///x.png",
                  "config": config.to_dict(), "size": [64, 96]}
    meta = artifact_metadata(provenance)
    assert _size(meta) <= METADATA_BUDGET < 2048
    assert "layer-octave-weights" not in meta
    assert "layer-octave-weights" in meta["truncated"].split(",")
    assert meta["input-sha256"] == "ab" * 32 and meta["octaves"] == "16"


def test_ordinary_metadata_is_kept_whole():
    provenance = {"dreamsuite": "0.1.0", "input_sha256": "cd" * 32,
                  "config": DreamConfig().to_dict(), "size": [64, 96]}
    meta = artifact_metadata(provenance)
    assert "truncated" not in meta and meta["backbone"] == "efficientnet_lite0"
