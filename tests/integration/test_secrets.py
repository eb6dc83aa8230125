"""S3 credentials are never logged: a ``dreamsuite -v serve dream`` process (debug logging, so
every library's log records are written too) on a real S3 endpoint, through successful dreams,
a missing artifact, the store going away and coming back, and shutdown; then every line it
wrote is searched for the keys."""

from __future__ import annotations

import signal
import urllib.parse

import grpc
import pytest

from dreamsuite.clients.dream import DreamClient
from dreamsuite.v1 import common_pb2

pytestmark = pytest.mark.slow

#: Recognisable credentials: the dream service's own variables, and the AWS fallbacks.
CANARIES = {
    "DREAMSUITE_S3_ACCESS_KEY": "DREAMSUITECANARYACCESS",
    "DREAMSUITE_S3_SECRET_KEY": "dreamsuite/canary+secret/Key0",
    "AWS_ACCESS_KEY_ID": "AWSCANARYACCESSKEY",
    "AWS_SECRET_ACCESS_KEY": "aws/canary+secret/Key0",
}


def leaks(text: str) -> list[str]:
    """The credentials (plain or URL-encoded) that ``text`` contains."""
    forms = {name: {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
             for name, value in CANARIES.items()}
    return [name for name, values in forms.items() if any(v in text for v in values)]


def test_s3_credentials_never_appear_in_logs_or_errors(serve, s3, cat_png, svc):
    url = svc.s3_url(s3.endpoint, "secrets", retries="2")
    server = serve("dream", "--artifacts", url, env=CANARIES, verbose=True)
    details: list[str] = []
    with DreamClient(server.address) as client:
        first = client.run(svc.small_request(cat_png, store_octaves=True), timeout=120)
        assert first.artifact.uri.startswith("s3://secrets/sha256/")
        # The presigned URL carries the access key id by design (it is what the client shows
        # S3); it is an answer, never a log line.
        missing = svc.small_request(b"")
        missing.image.CopyFrom(common_pb2.ImageRef(uri="s3://secrets/sha256/00/" + "0" * 64
                                                   + ".png"))
        details.append(svc.expect_code(lambda: list(client.dream(missing, timeout=60)),
                                       grpc.StatusCode.NOT_FOUND).details())
        s3.stop()
        details.append(svc.expect_code(
            lambda: list(client.dream(svc.small_request(cat_png, steps=3), timeout=120)),
            grpc.StatusCode.UNAVAILABLE).details())
        s3.start()
        again = client.run(svc.small_request(cat_png, steps=3), timeout=120)
        assert again.artifact.uri.startswith("s3://secrets/sha256/")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    log = server.output()
    # The log is the whole story (debug records of every library, the retries of the failed
    # upload, shutdown), and the credentials are in none of it.
    assert " DEBUG " in log and "failed (attempt 1 of 2)" in log and "shutting down" in log
    assert leaks(log) == []
    assert leaks("\n".join(details)) == []
