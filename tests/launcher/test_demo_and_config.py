"""The pieces of the launcher and the demo that need no running suite."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
import yaml
from PIL import Image

from dreamsuite.launcher import prometheus_config
from dreamsuite.launcher.demo import DemoResult, contact_sheet, octave_animation, write_demo


def _image(h: int, w: int, value: float) -> torch.Tensor:
    return torch.full((3, h, w), value)


def test_contact_sheet_puts_labelled_panels_side_by_side():
    sheet = contact_sheet([("input", _image(40, 60, 0.2)), ("dream", _image(40, 60, 0.8))],
                          height=50, margin=4, label=20)
    assert sheet.size == (4 + 75 + 4 + 75 + 4, 50 + 20 + 8)
    assert sheet.getpixel((4 + 10, 4 + 20 + 10)) == (51, 51, 51)  # first panel's pixels


def test_octave_animation_has_the_input_and_every_octave(tmp_path):
    octaves = [_image(20, 30, 0.1), _image(28, 42, 0.5), _image(40, 60, 0.9)]
    path = octave_animation(_image(40, 60, 0.0), octaves, tmp_path / "a.gif", frame_ms=50)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (60, 40)


def test_write_demo_writes_every_file(tmp_path):
    result = DemoResult(_image(40, 60, 0.5), [_image(20, 30, 0.4), _image(40, 60, 0.5)], 0.1)
    written = write_demo(tmp_path, _image(40, 60, 0.3), _image(40, 60, 0.6), result, result)
    assert {p.name for p in written} == {
        "input.png", "guide.png", "dream.png", "guided-dream.png", "contact-sheet.png",
        "dream-octaves.gif", "guided-dream-octaves.gif"}
    assert all(p.stat().st_size > 0 for p in written)


def test_write_demo_adds_the_style_panels(tmp_path):
    from dreamsuite.launcher.demo import StyleResults

    result = DemoResult(_image(40, 60, 0.5), [_image(40, 60, 0.5)], 0.1)
    styled = StyleResults(_image(40, 60, 0.7), {"stem": _image(40, 60, 0.2),
                                                "block_10": _image(40, 60, 0.9)}, 1.0)
    written = write_demo(tmp_path, _image(40, 60, 0.3), _image(40, 60, 0.6), result, result,
                         _image(40, 60, 0.1), styled)
    names = {p.name for p in written}
    assert {"style.png", "styled.png", "reconstructed-stem.png",
            "reconstructed-block_10.png"} <= names
    with Image.open(tmp_path / "contact-sheet.png") as sheet:
        assert sheet.width >= 8 * 60  # eight panels side by side


def test_local_prometheus_config_points_every_job_at_loopback(tmp_path):
    targets = {"torchserve": "127.0.0.1:1001", "guide": "127.0.0.1:1002",
               "dream": "127.0.0.1:1003"}
    config = prometheus_config(targets, "127.0.0.1:1004")
    jobs = {j["job_name"]: j["static_configs"] for j in config["scrape_configs"]}
    assert {name: sc[0]["targets"] for name, sc in jobs.items()} == {
        **{k: [v] for k, v in targets.items()}, "prometheus": ["127.0.0.1:1004"]}
    assert jobs["dream"][0]["labels"] == {"service": "dream"}  # kept from deploy/
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install prometheus (.ci/system-deps does)")
    config["rule_files"] = []
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_launcher_serves_exported_one_pass_models_beside_the_backbone(tmp_path):
    import zipfile

    from dreamsuite.launcher.processes import ServiceProcess
    from dreamsuite.launcher.suite import Suite, one_pass_archives

    for name, members in (("efficientnet_lite0", ["backbone_handler.py"]),
                          ("d2d-b", ["dream2dream_handler.py", "dream2dream.json"]),
                          ("d2d-a", ["dream2dream.json"])):
        with zipfile.ZipFile(tmp_path / f"{name}.mar", "w") as archive:
            for member in members:
                archive.writestr(member, "{}")
    (tmp_path / "broken.mar").write_bytes(b"not a zip")
    assert one_pass_archives(tmp_path) == ["d2d-a", "d2d-b"]
    # The dream service is told where TorchServe's gRPC inference API is: the fast path.
    suite = Suite(tmp_path / "run", model_store=tmp_path)
    suite.processes = [ServiceProcess("torchserve", 1, {"grpc": 7070}, "", "torchserve"),
                       ServiceProcess("guide", 2, {"grpc": 50052}, "", "grpc")]
    args = suite._dream_args({"grpc": 50051, "metrics": 9101})
    assert args[args.index("--torchserve") + 1].endswith(":7070")


def test_the_archive_cache_follows_every_handlers_source(tmp_path, monkeypatch):
    """An edited archive builder (its batch defaults) must not reuse archives built before."""
    from dreamsuite.launcher import suite
    from handlers import handler_file

    package = tmp_path / "handlers"
    shutil.copytree(handler_file().parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(suite, "handler_file", lambda: package / "backbone_handler.py")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = suite.model_store_dir()
    assert before == suite.model_store_dir()
    assert before.parent == tmp_path / "cache" / "dreamsuite" / "model-store"
    archive = package / "archive.py"
    archive.write_text(archive.read_text() + "\n# another batch default\n")
    after_archive = suite.model_store_dir()
    assert after_archive != before
    handler = package / "backbone_handler.py"
    handler.write_text(handler.read_text() + "\n# an edited handler\n")
    assert suite.model_store_dir() not in (before, after_archive)
