"""dreamsuite.engine.objectives: composable objectives, maplists and layer spec strings."""

from __future__ import annotations

import json

import pytest
import torch

from dreamsuite.engine.objectives import (
    LayerTerm,
    Maplist,
    channel,
    from_maplist,
    guide_match,
    layer_l2,
    load_maplist,
    parse_layer_spec,
    weighted_channels,
)
from dreamsuite.errors import InvalidArgument


@pytest.fixture
def acts() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(2, 5, 4, 3, generator=gen),
        "b": torch.randn(2, 3, 2, 2, generator=gen),
    }


def test_channel_and_layer_objectives_measure_what_they_say(acts):
    torch.testing.assert_close(channel("a", 3)(acts), acts["a"][:, 3].mean())
    torch.testing.assert_close(layer_l2("b")(acts), (acts["b"] ** 2).mean())
    weights = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.25])
    expected = sum(float(w) * acts["a"][:, c].mean() for c, w in enumerate(weights))
    torch.testing.assert_close(weighted_channels("a", weights)(acts), expected)


def test_objectives_compose_with_arithmetic(acts):
    obj = 0.5 * channel("a", 1) - channel("b", 2) + layer_l2("a") * 3
    expected = (0.5 * acts["a"][:, 1].mean() - acts["b"][:, 2].mean()
                + 3 * (acts["a"] ** 2).mean())
    torch.testing.assert_close(obj(acts), expected)
    assert obj.layers == {"a", "b"}
    torch.testing.assert_close((-channel("a", 0))(acts), -acts["a"][:, 0].mean())


def test_guide_match_pulls_each_position_towards_its_best_guide_feature():
    guide = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # [C=2, M=2]: two unit guide features
    x = torch.tensor([[3.0, -1.0], [0.5, 2.0]]).view(1, 2, 1, 2).requires_grad_()
    value = guide_match("l", guide)({"l": x})
    # Position 0 (3, 0.5) best matches feature 0, position 1 (-1, 2) feature 1.
    torch.testing.assert_close(value, torch.tensor((3.0 + 2.0) / 2))
    (grad,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(grad.view(2, 2), torch.tensor([[0.5, 0.0], [0.0, 0.5]]))


def test_guide_match_picks_the_best_guide_feature_in_float32_under_autocast():
    """Dreams run under autocast (fp16 on CUDA): a close second-best guide feature must not
    win by the product's rounding. bfloat16 autocast on the CPU rounds 1.0 and 1.002 alike."""
    guide = torch.tensor([[1.0, 1.002]])  # [C=1, M=2]: the second matches a positive x best
    x = torch.ones(1, 1, 1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float((x.flatten(2).transpose(1, 2) @ guide).argmax()) == 0  # the rounding
        value = guide_match("l", guide)({"l": x})
    assert float(value) == pytest.approx(1.002, rel=1e-6)


def test_maplist_objective_signs_and_weights(acts):
    maplist = Maplist((
        LayerTerm("a", 2.0, {1: 1.0, 4: -0.5}),
        LayerTerm("b"),  # whole layer
    ))
    expected = (2.0 * (acts["a"][:, 1].mean() - 0.5 * acts["a"][:, 4].mean())
                + (acts["b"] ** 2).mean())
    obj = from_maplist(maplist)
    torch.testing.assert_close(obj(acts), expected)
    assert obj.layers == {"a", "b"}


def test_empty_maplist_is_refused():
    with pytest.raises(InvalidArgument, match="empty"):
        from_maplist(Maplist(()))


def test_maplist_round_trips_through_json(tmp_path):
    maplist = Maplist((LayerTerm("block_3", 0.5, {3: 1.0, 17: -0.5}), LayerTerm("block_6")))
    path = tmp_path / "maplist.json"
    path.write_text(maplist.to_json())
    assert load_maplist(path) == maplist
    assert Maplist.from_dict(json.loads(maplist.to_json())) == maplist


def test_maplist_channels_may_be_a_plain_list(tmp_path):
    path = tmp_path / "maplist.json"
    path.write_text(json.dumps({"layers": [{"layer": "block_3", "channels": [3, 5]}]}))
    assert load_maplist(path) == Maplist((LayerTerm("block_3", 1.0, {3: 1.0, 5: 1.0}),))


@pytest.mark.parametrize(
    ("spec", "term"),
    [
        ("block_3", LayerTerm("block_3")),
        ("block_3=0.5", LayerTerm("block_3", 0.5)),
        ("block_3:3,17", LayerTerm("block_3", 1.0, {3: 1.0, 17: 1.0})),
        ("block_3:3=1.0,17=-0.5", LayerTerm("block_3", 1.0, {3: 1.0, 17: -0.5})),
        ("block_3=2:4=-1", LayerTerm("block_3", 2.0, {4: -1.0})),
    ],
)
def test_layer_specs_parse(spec, term):
    assert parse_layer_spec(spec) == term


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("", "no layer name"),
        (":3", "no layer name"),
        ("block_3:x", "block_3:x"),
        ("block_3:3,,4", "block_3:3,,4"),
        ("block_3:3=big", "block_3:3=big"),
        ("block_3=heavy", "block_3=heavy"),
        ("block_3=nan", "finite"),
        ("block_3:3=inf", "finite"),
        ("block_3:", "block_3:"),
    ],
)
def test_bad_layer_specs_are_refused_with_the_spec_named(spec, names):
    with pytest.raises(InvalidArgument) as info:
        parse_layer_spec(spec)
    assert names in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '{"layers": {"layer": "block_3"}}',
        '{"layers": [{"channels": [1]}]}',
        '{"layers": [{"layer": "block_3", "channels": {"a": 1}}]}',
        '{"layers": [{"layer": "block_3", "channels": {"3": "big"}}]}',
        '{"layers": [{"layer": "block_3", "channels": "3,4"}]}',
        '{"layers": [{"layer": "block_3", "weight": "heavy"}]}',
        '{"layers": [{"layer": "block_3", "weight": NaN}]}',
    ],
)
def test_malformed_maplist_files_raise_invalid_argument(tmp_path, content):
    path = tmp_path / "maplist.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument):
        load_maplist(path)


def test_missing_maplist_file_is_named(tmp_path):
    with pytest.raises(InvalidArgument, match="nowhere.json"):
        load_maplist(tmp_path / "nowhere.json")
