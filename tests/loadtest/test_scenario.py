"""Scenario files and flags: parsed, merged and checked once, with errors that name the key."""

from __future__ import annotations

import json

import pytest

from dreamsuite.errors import InvalidArgument
from dreamsuite.loadtest.plan import RunPlan
from dreamsuite.loadtest.scenario import Targets, load_scenario, parse_duration, parse_mix

ALL = Targets(dream="127.0.0.1:1", guide="127.0.0.1:2", gan="127.0.0.1:3")


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), (90, 90.0), ("1.5s", 1.5), ("500ms", 0.5), ("5m", 300.0), ("1h30m", 5400.0),
    ("2m30s", 150.0), (".5s", 0.5),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5x", "1m x", "-3s", "nan", "inf", True, "3s5"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(InvalidArgument, match="--duration"):
        parse_duration(text, "--duration")


def test_mix_accepts_kinds_and_method_names():
    assert parse_mix("dream=3, ComputeGuideWeights=1,select_neurons") == {
        "dream": 3, "guide_weights": 1, "select_neurons": 1}
    with pytest.raises(InvalidArgument, match="unknown user 'gan'"):
        parse_mix("gan=1")
    with pytest.raises(InvalidArgument, match="mix.dream"):
        parse_mix("dream=-1")


def test_default_mix_follows_the_targets():
    only_dream = load_scenario(targets=Targets(dream="h:1"))
    assert [c.kind for c in only_dream.active()] == ["dream"]
    suite = load_scenario(flags={"model": "m1"}, targets=ALL)
    assert [c.kind for c in suite.active()] == ["dream", "guide_weights", "select_neurons",
                                                 "sample"]
    no_model = load_scenario(targets=ALL)
    assert "sample" not in [c.kind for c in no_model.active()]


def test_file_sections_and_flags_layer_in_order(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text("""
mix: {dream: 3, guide_weights: 1}
wait: [0.1, 0.5]
backbone: efficientnet_lite0
layers: [block_6]
sizes: [64, 96]
deadline: 30s
dream: {octaves: 2, steps: 3, deadline: 5m, preview: false}
guide_weights: {guides: 2, invalid: 0.25}
""")
    scenario = load_scenario(path, flags={"steps": 1, "sizes": [80]}, targets=ALL)
    dream, guide = scenario.calls["dream"], scenario.calls["guide_weights"]
    assert (dream.weight, dream.octaves, dream.steps, dream.deadline) == (3, 2, 1, 300.0)
    assert dream.sizes == guide.sizes == (80,) and dream.preview is False
    assert (guide.weight, guide.guides, guide.invalid, guide.deadline) == (1, 2, 0.25, 30.0)
    assert guide.layers == ("block_6",) and scenario.wait == (0.1, 0.5)
    assert scenario.calls["select_neurons"].weight == 0  # the mix names it not


def test_json_scenarios_work_too(tmp_path):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"mix": "dream=1", "dream": {"octaves": 1}}))
    assert load_scenario(path, targets=ALL).calls["dream"].octaves == 1


@pytest.mark.parametrize(("text", "message"), [
    ("mixx: {dream: 1}", "unknown key 'mixx'"),
    ("dream: {octaves: 0}", r"dream.octaves: must be 1 to"),
    ("dream: {guides: 2}", "dream: unknown key 'guides'"),
    ("sizes: []", "give at least one size"),
    ("invalid: 2", "invalid: must be 0 to 1"),
    ("wait: [2, 1]", "wait: min 2 is above max 1"),
    ("- a list", "expected a mapping"),
    ("mix: {dream: 1}\ndream: {deadline: 0}", "must be above 0"),
    ("dream: [1", "not valid YAML/JSON"),
])
def test_bad_scenarios_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        load_scenario(path, targets=ALL)


def test_users_need_their_service():
    with pytest.raises(InvalidArgument, match="--guide HOST:PORT"):
        load_scenario(flags={"mix": "guide_weights=1"}, targets=Targets(dream="h:1"))
    with pytest.raises(InvalidArgument, match="need a model"):
        load_scenario(flags={"mix": "sample=1"}, targets=ALL)
    with pytest.raises(InvalidArgument, match="no users"):
        load_scenario(flags={"mix": "dream=0"}, targets=ALL)


def test_the_plan_survives_its_json(tmp_path):
    scenario = load_scenario(flags={"mix": "dream=2,sample=1", "model": "m", "sizes": [64],
                                    "token": "secret", "wait": "0.5-1"}, targets=ALL)
    plan = RunPlan(targets=ALL, scenario=scenario, users=3, duration=None, dreams=5)
    path = plan.write(tmp_path / "plan.json")
    assert path.stat().st_mode & 0o777 == 0o600  # it carries the token
    assert RunPlan.read(path) == plan


def test_dream_users_may_send_one_pass_requests(tmp_path):
    from dreamsuite.loadtest.payloads import INVALID_IMAGE, build_payloads

    path = tmp_path / "scenario.yaml"
    path.write_text("mix: {dream: 1}\nsizes: [32]\ndream: {model: d2d, condition: b, "
                    "octaves: 2}\n")
    dream = load_scenario(path, targets=ALL).calls["dream"]
    assert (dream.model, dream.condition) == ("d2d", "b")
    payloads = build_payloads(dream)
    for request in payloads.valid:
        assert (request.model, request.condition) == ("d2d", "b") and request.image.data
        # Only the image, the model and its condition: nothing of the optimisation.
        assert not request.HasField("schedule") and not request.backbone
    assert payloads.invalid.model == "d2d" and payloads.invalid.image.data == INVALID_IMAGE
    # --dream-model sets the dream's model, --gan-model (flag "model") Sample's alone.
    flags = {"mix": "dream=1,sample=1", "dream_model": "d2d-2", "model": "dcgan"}
    scenario = load_scenario(path, flags=flags, targets=ALL)
    assert scenario.calls["dream"].model == "d2d-2" and scenario.calls["sample"].model == "dcgan"
    plain = load_scenario(flags={"mix": "dream=1,sample=1", "model": "dcgan"}, targets=ALL)
    assert plain.calls["dream"].model == ""
    assert build_payloads(plain.calls["dream"]).valid[0].HasField("schedule")
    with pytest.raises(InvalidArgument, match="dream.condition"):
        load_scenario(flags={"condition": "b"}, targets=ALL)
    # The plan carries them to the Locust process.
    plan = RunPlan(targets=ALL, scenario=scenario)
    assert RunPlan.from_json(plan.to_json()) == plan
