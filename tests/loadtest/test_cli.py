"""The command line: registration, a light import, and exit code 2 for bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from dreamsuite.loadtest import cli


def test_register_adds_loadtest_and_bench():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(["loadtest", "127.0.0.1:50051", "--guide", "h:2", "-u", "3",
                              "--duration", "5s", "--slo", "p95_total<30s", "--size", "64",
                              "--size", "96", "--layer", "block_6", "--metrics", "http://m"])
    assert (args.target, args.guide, args.users, args.sizes, args.layers) == (
        "127.0.0.1:50051", "h:2", 3, [64, 96], ["block_6"])
    assert args.func.__name__ == "_loadtest"
    parser = argparse.ArgumentParser()
    which = parser.add_subparsers(dest="bench")
    cli.register_bench(which)
    args = parser.parse_args(["loadtest", "--calls", "50", "--json"])
    assert (args.calls, args.chunk, args.json) == (50, 10, True)


def test_importing_the_command_line_loads_nothing_heavy():
    script = ("import sys, dreamsuite.loadtest.cli;"
              "print([m for m in ('grpc', 'torch', 'locust', 'gevent', 'yaml', 'prometheus_client')"
              " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["h:1", "--slo", "p95_total<"], "--slo"),
    (["h:1", "--slo", "p97<3s"], "unknown metric"),
    (["h:1", "--duration", "soon"], "--duration"),
    (["h:1", "--duration", "0"], "--duration: must be above 0"),
    (["h:1", "--duration", "0s", "--dreams", "3"], "--duration: must be above 0"),
    (["h:1", "--duration", ""], "--duration"),
    (["--guide", "h:2", "--mix", "dream=1"], "TARGET"),
    (["h:1", "--users", "0"], "--users"),
    (["h:1", "--dreams", "3", "--mix", "guide_weights=1", "--guide", "g:1"], "--dreams"),
    (["h:1", "--scenario", "/nonexistent/scenario.yaml"], "cannot read it"),
    (["h:1", "--image", "/nonexistent/cat.jpg"], "no such file"),
])
def test_bad_input_exits_2_before_any_load(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_scenario_file_exits_2(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("dream: {octaves: many}\n")
    assert cli.main(["h:1", "--scenario", str(path)]) == 2
    assert "dream.octaves" in capsys.readouterr().err


def test_dream_model_and_condition_flags_make_one_pass_dream_users():
    from dreamsuite.loadtest.command import plan_from_args

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["h:1", "--dream-model", "d2d", "--condition", "stripes-b",
                              "--gan", "g:1", "--gan-model", "dcgan", "--mix", "dream=1,sample=1"])
    calls = plan_from_args(args).scenario.calls
    assert (calls["dream"].model, calls["dream"].condition) == ("d2d", "stripes-b")
    assert calls["sample"].model == "dcgan"


def test_the_readmes_examples_make_plans():
    import re
    import shlex
    from pathlib import Path

    from dreamsuite.loadtest.command import plan_from_args

    readme = Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text(encoding="utf-8").split("## Load testing", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    examples = [shlex.split(line, comments=True)[2:] for line in block.splitlines()
                if re.match(r"dreamsuite loadtest \d", line)]
    assert len(examples) >= 4
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    for argv in examples:
        if "--image" in argv:  # a file of the reader's own
            del argv[argv.index("--image"):argv.index("--image") + 2]
        assert plan_from_args(parser.parse_args(argv)).targets.dream == "127.0.0.1:50051", argv
