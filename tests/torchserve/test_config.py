"""Archive command, TorchServe config and the generated TorchServe protocol code."""

from __future__ import annotations

import zipfile

import pytest

from dreamsuite import protogen
from dreamsuite.cli import main
from dreamsuite.torchserve import MAX_MESSAGE_BYTES, TorchServePorts, render_config
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS


def test_local_config_is_loopback_prometheus_and_raised_limits(tmp_path):
    text = render_config(model_store=tmp_path, ports=TorchServePorts(), models=["m"])
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["inference_address"] == "http://127.0.0.1:8080"
    assert props["grpc_inference_address"] == "127.0.0.1"
    assert props["metrics_mode"] == "prometheus"
    assert props["enable_model_api"] == "false"
    assert props["disable_token_authorization"] == "true"
    assert int(props["max_response_size"]) == MAX_MESSAGE_BYTES


def test_token_authorization_stays_on_beyond_loopback(tmp_path):
    with pytest.raises(ValueError, match="only be off on loopback"):
        render_config(model_store=tmp_path, host="0.0.0.0")
    text = render_config(model_store=tmp_path, host="0.0.0.0", token_auth=True)
    assert "disable_token_authorization=false" in text


def test_archive_command_writes_mar_and_config(tmp_path, capsys):
    assert main(["archive", "--backbone", "efficientnet_lite0", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "efficientnet_lite0.mar").stat().st_size > 10_000_000
    with zipfile.ZipFile(tmp_path / "efficientnet_lite0.mar") as mar:
        config = mar.read("model-config.yaml").decode()
    # the measured defaults (README, "TorchServe and the guide service": batching)
    assert f"batchSize: {DEFAULT_BATCH_SIZE}\n" in config
    assert f"maxBatchDelay: {DEFAULT_MAX_BATCH_DELAY_MS}\n" in config
    assert "load_models=efficientnet_lite0.mar" in (tmp_path / "config.properties").read_text()
    assert "wrote" in capsys.readouterr().out


def test_archive_of_an_unknown_backbone_fails_clearly(tmp_path, capsys):
    assert main(["archive", "--backbone", "nope", "-o", str(tmp_path)]) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err


def test_generated_torchserve_code_matches_the_proto():
    (target,) = [t for t in protogen.TARGETS if t.name == "torchserve"]
    assert protogen.stale_files(target) == []
