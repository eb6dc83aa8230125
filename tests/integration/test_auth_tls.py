"""Bearer tokens and TLS beyond the unary ListBackbones: the streaming Dream, server reflection,
the guide service, and the command line reading DREAMSUITE_TOKEN and DREAMSUITE_TLS_CA through
a TLS chain of real processes (CLI -> dream service -> guide service). Health needs no token."""

from __future__ import annotations

import json
import re
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dreamsuite.cli import main
from dreamsuite.clients import open_channel
from dreamsuite.clients.guide import GuideClient
from dreamsuite.engine import PROVENANCE_KEY
from dreamsuite.errors import Unauthenticated
from dreamsuite.images import encode_png, load_image, read_png_text, sample_image
from services.common.config import ServerConfig

pytestmark = pytest.mark.slow

TOKEN = "integration-t0ken"
SERVING = health_pb2.HealthCheckResponse.SERVING
GUIDE = "dreamsuite.v1.GuideService"


def reflected(address: str, *, token: str | None = None, tls_ca=None) -> set[str]:
    """The service names server reflection lists (a bidi stream: it goes through auth too)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with open_channel(address, tls_ca=tls_ca) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata))
    return {s.name for s in answer.list_services_response.service}


def test_streaming_dream_and_reflection_need_the_token_health_does_not(dream_server, cat_png,
                                                                        svc):
    server = dream_server(server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0,
                                              token=TOKEN, grace_seconds=0))
    for token in ("", "wrong"):
        with server.client(token=token) as client:
            error = svc.expect_code(
                lambda c=client: list(c.dream(svc.small_request(cat_png), timeout=30)),
                grpc.StatusCode.UNAUTHENTICATED)
        assert "bearer token" in error.details()
        svc.expect_code(lambda t=token: reflected(server.address, token=t),
                        grpc.StatusCode.UNAUTHENTICATED)
    # Refused before the servicer: nothing was decoded, queued or dreamed.
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "ok"}) == 0
    assert server.sample("grpc_server_handled_total", {
        "grpc_service": "dreamsuite.v1.DreamService", "grpc_method": "Dream",
        "grpc_type": "server_stream", "grpc_code": "Unauthenticated"}) == 2
    assert server.health() == SERVING  # probes need no token
    assert "dreamsuite.v1.DreamService" in reflected(server.address, token=TOKEN)
    with server.client(token=TOKEN) as client:
        updates = list(client.dream(svc.small_request(cat_png), timeout=120))
    assert [u.HasField("result") for u in updates] == [False, True]
    assert server.sample("dream_job_seconds_count",
                         {"backbone": "efficientnet_lite0", "kind": "dream", "outcome": "ok"}) == 1


def test_guide_service_reads_its_token_from_the_environment(serve):
    guide = serve("guide", env={"DREAMSUITE_TOKEN": TOKEN})
    png = encode_png(sample_image("coffee", size=48))
    calls = {
        "ComputeGuideWeights": lambda c: c.guide_weights([png], "", [("block_6", 1.0)]),
        "SelectNeurons": lambda c: c.select([png], "", ["block_6"], top_k=2, bottom_k=1),
        "Activations": lambda c: c.activations(png, "", ["block_6"]),
    }
    for token in ("", "wrong"):
        with GuideClient(guide.address, token=token) as client:
            for call in calls.values():
                with pytest.raises(Unauthenticated, match="UNAUTHENTICATED.*bearer token"):
                    call(client)
        with pytest.raises(grpc.RpcError) as info:
            reflected(guide.address, token=token)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert guide.health(GUIDE) == SERVING
    with GuideClient(guide.address, token=TOKEN) as client:
        backbone, weights = client.guide_weights([png], "", [("block_6", 1.0)])
        _, selection = client.select([png], "", ["block_6"], top_k=2, bottom_k=1)
        stats = client.activations(png, "", ["block_6"])
    assert backbone == "efficientnet_lite0" and len(weights["block_6"]) == 80
    assert sum(abs(w) for w in weights["block_6"]) == pytest.approx(1.0, abs=1e-5)
    assert len(selection.top["block_6"]) == 2 and len(selection.bottom["block_6"]) == 1
    assert [layer.channels for layer in stats.layers] == [80]
    assert GUIDE in reflected(guide.address, token=TOKEN)


def _metrics_port(served) -> int:
    return int(re.search(r"metrics on :(\d+)", served.output()).group(1))


def _handled(port: int, method: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grpc_server_handled_total{")
               and 'grpc_code="OK"' in line and f'grpc_method="{method}"' in line)


def test_cli_over_tls_with_token_and_ca_from_the_environment(serve, follow, tls_pair, tmp_path,
                                                            monkeypatch, capsys):
    cert, key = tls_pair
    secure = {"DREAMSUITE_TOKEN": TOKEN, "DREAMSUITE_TLS_CERT": str(cert),
              "DREAMSUITE_TLS_KEY": str(key)}
    guide = serve("guide", "--metrics-port", "0", env=secure, tls_ca=cert)
    # The dream service reaches the guide service with the same token, trusting the same CA.
    dream = serve("dream", "--guide", guide.address,
                  env={**secure, "DREAMSUITE_TLS_CA": str(cert)}, tls_ca=cert)
    assert "(TLS)" in guide.output() and "(TLS)" in dream.output()
    source, guide_png = tmp_path / "cat.png", tmp_path / "coffee.png"
    source.write_bytes(encode_png(sample_image("chelsea", size=48)))
    guide_png.write_bytes(encode_png(sample_image("coffee", size=48)))
    out = tmp_path / "dream.png"
    dream_argv = ["dream", str(source), "-o", str(out), "--remote", dream.address, "--guide",
                  str(guide_png), "--octaves", "1", "--steps", "2", "--layer", "block_6",
                  "--quiet"]
    weights_argv = ["guide-weights", str(guide_png), "--layer", "block_6", "--json",
                    "--remote", guide.address]

    monkeypatch.setenv("DREAMSUITE_TOKEN", TOKEN)
    monkeypatch.setenv("DREAMSUITE_TLS_CA", str(cert))
    assert main(dream_argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert load_image(out).shape == (3, 48, 72)
    assert json.loads(read_png_text(out)[PROVENANCE_KEY])["guided"] is True
    # The guide weights came from the guide service, over TLS with the token.
    assert _handled(_metrics_port(guide), "ComputeGuideWeights") == 1
    assert main(weights_argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["layers"]["block_6"]) == 80
    probe = follow.cli("health", dream.address, env={"DREAMSUITE_TLS_CA": str(cert)},
                       timeout=60)
    assert probe.returncode == 0 and "SERVING" in probe.stdout, probe.stdout + probe.stderr

    monkeypatch.delenv("DREAMSUITE_TOKEN")  # no token: refused, exit code 2
    for argv in (dream_argv, weights_argv):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "UNAUTHENTICATED" in err and "Traceback" not in err
    monkeypatch.setenv("DREAMSUITE_TOKEN", TOKEN)
    monkeypatch.delenv("DREAMSUITE_TLS_CA")  # plaintext to a TLS-only server
    for argv in (dream_argv, weights_argv):
        assert main(argv) == 2
        assert "UNAVAILABLE" in capsys.readouterr().err
    assert follow.cli("health", dream.address, timeout=60).returncode == 1
