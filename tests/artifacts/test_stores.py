"""Both artifact stores through the one interface: content addressing, metadata, presigned
URLs, missing objects, failures that leave nothing behind."""

from __future__ import annotations

import hashlib
import socket
import urllib.request
import uuid
from pathlib import Path

import pytest

from dreamsuite.artifacts import LocalStore, S3Store, open_store
from dreamsuite.artifacts.base import METADATA_LIMIT_BYTES, RetryPolicy, content_key
from dreamsuite.artifacts.s3 import parse_s3_url
from dreamsuite.clients.dream import fetch_url
from dreamsuite.errors import InvalidArgument, NotFound, Unavailable

DATA = b"\x89PNG pretend image bytes"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path.as_uri())
    endpoint = request.getfixturevalue("s3").endpoint
    # A bucket of its own: the S3 endpoint lives for the session, listings must not see others.
    return open_store(f"s3://dreams-{uuid.uuid4().hex[:12]}?endpoint={endpoint}&secure=false")


def test_content_addressed_put_get_stat(store):
    digest = hashlib.sha256(DATA).hexdigest()
    artifact = store.put(DATA, metadata={"Backbone": "efficientnet_lite0", "seed": 7})
    assert artifact.key == f"sha256/{digest[:2]}/{digest}.png" and artifact.sha256 == digest
    assert store.put(DATA).uri == artifact.uri  # same bytes, same object
    assert store.get(artifact.uri) == DATA and store.get(artifact.key) == DATA
    info = store.stat(artifact.uri)
    assert info.metadata == {"backbone": "efficientnet_lite0", "seed": "7"}
    assert (info.size, info.content_type, info.sha256) == (len(DATA), "image/png", digest)


def test_presigned_url_fetches_the_object(store):
    artifact = store.put(DATA)
    assert fetch_url(store.presign(artifact.uri)) == DATA


def test_missing_object_is_not_found(store):
    key, _ = content_key(b"never stored")
    with pytest.raises(NotFound):
        store.get(key)
    with pytest.raises(NotFound):
        store.stat(key)


def test_uri_of_another_store_is_refused(store):
    for uri in ("s3://elsewhere/sha256/aa/x.png", "file:///elsewhere/sha256/aa/x.png"):
        with pytest.raises(InvalidArgument, match="not in this service's artifact store"):
            store.get(uri)


def test_metadata_is_trimmed_to_what_s3_keeps(tmp_path):
    artifact = LocalStore(tmp_path).put(DATA, metadata={"maplist": "x" * 5000, "seed": "1"})
    assert sum(len(k) + len(v) for k, v in artifact.metadata.items()) <= METADATA_LIMIT_BYTES


def test_failed_local_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import dreamsuite.artifacts.local as local

    store = LocalStore(tmp_path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(local.os, "replace", fail)
    with pytest.raises(Unavailable, match="disk full"):
        store.put(DATA)
    assert [p for p in Path(tmp_path).rglob("*") if p.is_file()] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_s3_is_unavailable_after_bounded_retries(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    url = f"s3://dreams?endpoint=127.0.0.1:{_free_port()}&secure=false"
    store = S3Store(parse_s3_url(url), retry=RetryPolicy(attempts=2, base_delay=0.01))
    with pytest.raises(Unavailable, match="after 2 attempts") as info:
        store.put(DATA)
    assert "do-not-print-me" not in str(info.value)
    assert "do-not-print-me" not in store.url


def test_failed_s3_upload_leaves_no_object_and_recovers(s3):
    store = open_store(f"s3://outage?endpoint={s3.endpoint}&secure=false&retries=2")
    store.put(b"make the bucket")
    s3.stop()
    with pytest.raises(Unavailable, match="upload"):
        store.put(DATA)
    s3.start()
    with pytest.raises(NotFound):
        store.stat(content_key(DATA)[0])
    assert store.get(store.put(DATA).uri) == DATA


def test_presigned_urls_are_signed_for_the_public_endpoint(s3):
    store = open_store(f"s3://dreams?endpoint={s3.endpoint}&secure=false"
                       f"&public_endpoint=localhost:{s3.port}")
    url = store.presign(store.put(DATA).uri)
    assert url.startswith(f"http://localhost:{s3.port}/dreams/sha256/")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == DATA


def test_open_store_urls(tmp_path):
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store(tmp_path.as_uri()), LocalStore)
    settings = parse_s3_url("s3://b?endpoint=minio:9000&secure=false&public_endpoint=x:1")
    assert (settings.bucket, settings.endpoint, settings.secure) == ("b", "minio:9000", False)
    assert settings.public_endpoint == "x:1"
    for bad in ("ftp://x", "s3://b?secure=maybe", "file://host/path"):
        with pytest.raises(InvalidArgument):
            open_store(bad)


def test_listing_pages_through_every_key_under_a_prefix(store):
    keys = sorted(store.put(f"object {i}".encode()).key for i in range(5))
    first = store.list("sha256/", limit=2)
    assert first.keys == keys[:2] and first.next_after == keys[1]
    second = store.list("sha256/", limit=2, start_after=first.next_after)
    assert second.keys == keys[2:4]
    last = store.list("sha256/", limit=2, start_after=second.next_after)
    assert last.keys == keys[4:] and last.next_after == ""
    assert list(store.iter_keys("sha256/", page=2)) == keys  # no metadata or temporary files
    assert list(store.iter_keys()) == keys
    narrow = keys[0][: len("sha256/ab/") + 3]
    assert list(store.iter_keys(narrow)) == [k for k in keys if k.startswith(narrow)]
    assert store.list("sha256/zz/").keys == []


def test_listing_takes_a_uri_of_the_store(store):
    artifact = store.put(DATA)
    folder_uri = artifact.uri.rsplit("/", 2)[0] + "/"  # .../sha256/ab/
    assert list(store.iter_keys(folder_uri)) == [artifact.key]
    with pytest.raises(InvalidArgument, match="not in this service's artifact store"):
        store.list("s3://elsewhere/sha256/" if isinstance(store, LocalStore)
                   else "file:///elsewhere/sha256/")


@pytest.mark.parametrize("uri", ["sha256/\x00/x.png", "sha256/a\nb.png", "x" * 5000, ""])
def test_malformed_uris_are_invalid_arguments(store, uri):
    with pytest.raises(InvalidArgument):
        store.get(uri)


def test_a_folder_of_the_store_is_not_found_never_unavailable(store):
    artifact = store.put(DATA)
    folder = artifact.key.rsplit("/", 1)[0] + "/"
    with pytest.raises(NotFound):
        store.get(folder)


def test_named_objects_are_replaced_whole(store):
    first = store.put_at("jobs/j1/checkpoints/latest", b'{"step": 1}',
                         content_type="application/json", metadata={"step": "1"})
    assert store.get(first.uri) == b'{"step": 1}' and first.key == "jobs/j1/checkpoints/latest"
    info = store.stat(first.key)
    assert info.sha256 == hashlib.sha256(b'{"step": 1}').hexdigest() == first.sha256
    assert info.metadata == {"step": "1"} and info.content_type == "application/json"
    store.put_at("jobs/j1/checkpoints/latest", b'{"step": 2}', content_type="application/json")
    assert store.get("jobs/j1/checkpoints/latest") == b'{"step": 2}'
    assert list(store.iter_keys("jobs/j1/")) == ["jobs/j1/checkpoints/latest"]
    for bad in ("../escape", "/absolute", "a//b", "s3://x/y"):
        with pytest.raises(InvalidArgument):
            store.put_at(bad, b"x")


@pytest.mark.parametrize("key", ["data/a?b.png", "x/a#1.png", "with space/100%.json"])
def test_a_named_objects_uri_gives_back_its_whole_key(store, key):
    """The S3 store wrote keys into its URIs unencoded: reading ``data/a?b.png``'s URI back
    gave the key ``data/a`` (another object, or none)."""
    artifact = store.put_at(key, DATA)
    assert store.key_of(artifact.uri) == key
    assert store.get(artifact.uri) == DATA and store.stat(artifact.uri).key == key


def test_dot_segments_are_a_clients_mistake_not_an_internal_error(store):
    """The S3 client raised ``ValueError`` for ``..`` parts, which reached callers as
    INTERNAL."""
    artifact = store.put(DATA)
    folder, name = artifact.uri.rsplit("/", 1)
    for uri in (f"{folder}/../{name}", f"{folder}/./../{name}", "sha256/../sha256/x.png"):
        with pytest.raises((InvalidArgument, NotFound)):
            store.get(uri)
    if isinstance(store, S3Store):
        with pytest.raises(InvalidArgument, match="'.' or '..'"):
            store.presign(f"{folder}/../x.png")
        with pytest.raises(InvalidArgument, match="%3F"):
            store.get(f"{folder}/{name}?v=2")
