"""The dream engine: configs and their one validation, objectives, octaves and tiling, guide
arithmetic, the optimisation loop and provenance.

>>> from dreamsuite.engine import DreamConfig, Maplist, dream, parse_layer_spec
>>> config = DreamConfig(maplist=Maplist((parse_layer_spec("block_10:3=1,17=-0.5"),)), seed=7)
>>> result = dream(image, config)          # image: [3, H, W] in [0, 1]
"""

from dreamsuite.engine.config import (
    RANGES,
    CheckedConfig,
    DreamConfig,
    check_config,
    check_guide_weights,
)
from dreamsuite.engine.dream import DreamProgress, DreamResult, build_objective, dream
from dreamsuite.engine.guide import Selection, guide_weights, select_neurons
from dreamsuite.engine.objectives import (
    LayerTerm,
    Maplist,
    Objective,
    channel,
    from_maplist,
    layer_l2,
    load_maplist,
    parse_layer_spec,
)
from dreamsuite.engine.provenance import (
    PROVENANCE_KEY,
    Recorded,
    provenance_text,
    read_provenance,
)

__all__ = [
    "PROVENANCE_KEY",
    "RANGES",
    "CheckedConfig",
    "DreamConfig",
    "DreamProgress",
    "DreamResult",
    "LayerTerm",
    "Maplist",
    "Objective",
    "Recorded",
    "Selection",
    "build_objective",
    "channel",
    "check_config",
    "check_guide_weights",
    "dream",
    "from_maplist",
    "guide_weights",
    "layer_l2",
    "load_maplist",
    "parse_layer_spec",
    "provenance_text",
    "read_provenance",
    "select_neurons",
]
