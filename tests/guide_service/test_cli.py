"""``guide-weights --remote`` and ``select --remote`` print what the local commands print."""

from __future__ import annotations

import json

import pytest

from dreamsuite.cli import main

LAYER_ARGS = ["--layer", "block_3", "--layer", "block_10"]


def _run(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("as_json", [False, True])
def test_guide_weights_remote_prints_the_local_output(guide_torchserve, image_dir, capsys,
                                                      as_json):
    argv = ["guide-weights", str(image_dir / "chelsea.png"), str(image_dir / "rocket.png"),
            *LAYER_ARGS, *(["--json"] if as_json else [])]
    local = _run(capsys, argv)
    remote = _run(capsys, [*argv, "--remote", guide_torchserve.address])
    if as_json:
        local_weights, remote_weights = json.loads(local), json.loads(remote)
        assert remote_weights["backbone"] == local_weights["backbone"]
        for layer, values in local_weights["layers"].items():
            assert remote_weights["layers"][layer] == pytest.approx(values, rel=1e-4, abs=1e-7)
    else:
        assert remote == local
        assert "efficientnet_lite0 block_10: 112 maps; strongest:" in remote


def test_select_remote_writes_the_local_maplist(guide_torchserve, image_dir, tmp_path, capsys):
    out = tmp_path / "maplist.json"
    argv = ["select", str(image_dir), "--layer", "block_6", "--top-k", "4", "--bottom-k", "2",
            "-o", str(out)]
    local_out = _run(capsys, argv)
    local_maplist = out.read_text()
    out.unlink()
    remote_out = _run(capsys, [*argv, "--remote", guide_torchserve.address])
    assert remote_out == local_out
    assert out.read_text() == local_maplist


def test_remote_errors_are_printed_like_local_ones(guide_inprocess, image_dir, capsys):
    argv = ["guide-weights", str(image_dir / "chelsea.png"), "--layer", "nope",
            "--remote", guide_inprocess.address]
    assert main(argv) == 2
    assert "no layer 'nope'" in capsys.readouterr().err
    assert main(["guide-weights", str(image_dir / "missing.png"), "--layer", "block_3",
                 "--remote", "127.0.0.1:1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    argv = ["guide-weights", str(image_dir / "chelsea.png"), "--layer", "block_3=2"]
    assert main(argv) == 2
    local = capsys.readouterr().err
    assert main([*argv, "--remote", guide_inprocess.address]) == 2
    assert capsys.readouterr().err == local  # weights or channels refused as locally


@pytest.mark.parametrize(("argv", "says"), [
    (["guide-weights", "{corrupt}", "--layer", "block_3"], "not a readable image"),
    (["guide-weights", "{cat}", "--layer", "block_3", "--backbone", "resnet9000"],
     "backbone: unknown backbone 'resnet9000'"),
    (["select", "{dir}", "--layer", "block_6", "--top-k", "81", "-o", "{out}"],
     "top_k must be between 0 and 80, not 81"),
    (["select", "{dir}", "--layer", "block_6", "-o", "{out}"], "both zero"),
])
def test_remote_bad_input_exits_2(guide_inprocess, image_dir, tmp_path, capsys, argv, says):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not the rest of a PNG")
    out = tmp_path / "maplist.json"
    argv = [a.format(corrupt=corrupt, cat=image_dir / "chelsea.png", dir=image_dir, out=out)
            for a in argv]
    assert main([*argv, "--remote", guide_inprocess.address]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dreamsuite {argv[0]}: error:"), err
    assert "INVALID_ARGUMENT" in err and says in err and "Traceback" not in err
    assert not out.exists()
