"""Fixtures of the fuzz tests: one dream service and one guide service per module on loopback,
with limits small enough that every valid request is cheap, the hostile-image corpus, the
hypothesis strategies both services share, and the judge of an answer.

Every call is made raw (serialised bytes in, bytes out) with a 5 s deadline, so that requests
can also carry unknown fields. An answer passes when its status code is one a client is told to
expect, it came within the deadline (plus slack), an INVALID_ARGUMENT message starts with the
request field it is about, the server still reports SERVING and nothing was logged at ERROR.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from dreamsuite.artifacts import LocalStore
from dreamsuite.backbones import get_backbone_spec, list_backbones
from dreamsuite.clients import open_channel
from dreamsuite.images import encode_png, sample_image
from dreamsuite.v1 import common_pb2
from services.common.config import ServerConfig
from services.common.loop_thread import LoopThread
from services.dream.config import DreamServiceConfig
from services.dream.server import start_dream_server
from services.guide.server import GuideConfig, start_guide_server

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile-images"
#: Pixel limit of the fuzzed services (dream: --max-pixels; guide: DREAMSUITE_MAX_PIXELS).
MAX_PIXELS = 128 * 128
DEADLINE = 5.0
SLACK = 3.0
SERVING = health_pb2.HealthCheckResponse.SERVING
#: Every code a client of either service is told to expect for a bad or expensive request.
DOCUMENTED = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
})
DREAM_SERVICE = "dreamsuite.v1.DreamService"
GUIDE_SERVICE = "dreamsuite.v1.GuideService"
#: Examples run per RPC, and answers per RPC and code, in this session (terminal summary).
COUNTS: Counter[str] = Counter()
CODES: Counter[tuple[str, str]] = Counter()
EXAMPLES = 200
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))

_FIELD_PATH = re.compile(r"([a-z_0-9]+)(\[\d+\])?(\.[a-z_0-9]+(\[\d+\])?)*(?=[ :]|$)")


def field_names(descriptor) -> set[str]:
    """Every field name of a message type and the message types inside it."""
    names: set[str] = set()
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        for f in message.fields:
            names.add(f.name)
            if f.message_type is not None:
                pending.append(f.message_type)
    return names


# --- answers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    seconds: float
    responses: int = 0


@dataclass
class Target:
    """A server under test: raw calls, its health and its store."""

    address: str
    service: str
    store: LocalStore
    errors: list[logging.LogRecord]
    #: URIs of objects put in the store for the strategies (see :func:`_fill`).
    uris: dict[str, str] = field(default_factory=dict)
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = open_channel(self.address)

    def call(self, method: str, request: bytes, *, stream: bool = False,
             deadline: float = DEADLINE) -> Outcome:
        """``method`` of the service with serialised ``request``, every response read."""
        path = f"/{self.service}/{method}"
        self.errors.clear()  # whatever an earlier, failed check left
        started = time.monotonic()
        count = 0
        try:
            if stream:
                for _ in self.channel.unary_stream(path)(request, timeout=deadline):
                    count += 1
            else:
                self.channel.unary_unary(path)(request, timeout=deadline)
                count = 1
        except grpc.RpcError as exc:
            return Outcome(exc.code(), exc.details() or "", time.monotonic() - started, count)
        return Outcome(grpc.StatusCode.OK, "", time.monotonic() - started, count)

    def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=10).status

    def judge(self, outcome: Outcome, fields: set[str], what: object = "",
              rpc: str = "") -> None:
        """Assert everything a fuzzed answer must satisfy (see the module docstring)."""
        CODES[rpc, outcome.code.name] += 1
        where = f"{outcome.code.name} {outcome.details[:300]!r} for {str(what)[:300]}"
        assert outcome.code in DOCUMENTED, where
        assert outcome.seconds < DEADLINE + SLACK, f"{outcome.seconds:.1f} s: {where}"
        assert len(outcome.details.encode()) <= 4 * 2100, where
        if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
            match = _FIELD_PATH.match(outcome.details)
            assert match and match.group(1) in fields, f"names no field: {where}"
        assert self.health() == SERVING, where
        logged = [f"{r.name}: {r.getMessage()}" for r in self.errors]
        self.errors.clear()
        assert not logged, f"logged at ERROR: {logged} after {where}"


class _ErrorRecords(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def error_log() -> Iterator[list[logging.LogRecord]]:
    """Records logged at ERROR or above anywhere in the process while the module runs."""
    records: list[logging.LogRecord] = []
    handler = _ErrorRecords(records)
    logging.getLogger().addHandler(handler)
    yield records
    logging.getLogger().removeHandler(handler)


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory) -> Iterator[Path]:
    """No pretrained weights but the embedded ones (other backbones fail fast with
    FAILED_PRECONDITION wherever this runs), and the guide service's pixel limit."""
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DREAMSUITE_WEIGHTS_DIR", str(root / "no-weights"))
        patch.setenv("TORCH_HOME", str(root / "torch-home"))
        patch.setenv("DREAMSUITE_MAX_PIXELS", str(MAX_PIXELS))
        yield root


def _server_config() -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=0)


def _fill(store: LocalStore) -> dict[str, str]:
    """Objects the strategies name by URI: an image, a tiny one, a hostile one, a non-image."""
    cat = encode_png(sample_image("chelsea", size=40))
    uris = {"image": store.put(cat).uri,
            "tiny": store.put(encode_png(sample_image("coffee", size=40)[:, :2, :2])).uri,
            "hostile": store.put((CORPUS / "bad-png-idat-short.png").read_bytes()).uri,
            "text": store.put(b"not an image", content_type="application/json").uri}
    for name, data in (("a.png", cat), ("b.png", encode_png(sample_image("rocket", size=36))),
                       ("c.png", (CORPUS / "mut-flips.png").read_bytes())):
        store.put_at(f"fuzz/{name}", data, content_type="image/png")
    return uris


@pytest.fixture(scope="module")
def dream_target(fuzz_env, error_log) -> Iterator[Target]:
    """A dream service with a small pixel limit and room in its queue."""
    root = fuzz_env / "dream-artifacts"
    store = LocalStore(root)
    loop = LoopThread()
    config = DreamServiceConfig(server=_server_config(), artifacts=root.as_uri(), device="cpu",
                                queue_size=16, max_pixels=MAX_PIXELS,
                                preload=("efficientnet_lite0",))
    server = loop.run(start_dream_server(config, registry=CollectorRegistry()))
    target = Target(server.address, DREAM_SERVICE, store, error_log, _fill(store))
    yield target
    target.channel.close()
    loop.run(server.stop(0))
    loop.close()


@pytest.fixture(scope="module")
def guide_target(fuzz_env, error_log) -> Iterator[Target]:
    """A guide service on the in-process backend, with an artifact store."""
    root = fuzz_env / "guide-artifacts"
    store = LocalStore(root)
    loop = LoopThread()
    running = loop.run(start_guide_server(
        _server_config(), GuideConfig(activations="inprocess", artifacts=root.as_uri())))
    target = Target(running.address, GUIDE_SERVICE, store, error_log, _fill(store))
    yield target
    target.channel.close()
    loop.run(running.stop(0))
    loop.close()


# --- strategies both services share -------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
SPECIAL_FLOATS = (math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 5e-324,
                  1.0, -1.0, 0.5, 3.4e38)
LAYERS = tuple(info.name for info in get_backbone_spec("efficientnet_lite0").layers)
BACKBONES = tuple(list_backbones())


def mostly(usual: st.SearchStrategy, *rest: st.SearchStrategy,
           percent: int = 60) -> st.SearchStrategy:
    """``usual`` in about ``percent`` of the draws, one of ``rest`` otherwise."""
    others = st.one_of(*rest)
    return st.integers(0, 99).flatmap(lambda k: usual if k < percent else others)


def integers(low: int, high: int, *valid: int) -> st.SearchStrategy[int]:
    """Whole numbers of a wire type ``[low, high]``: ``valid`` ones mostly, the extremes and
    anything in between."""
    edges = st.sampled_from(sorted({low, high, 0, -1 if low < 0 else 1, low + 1, high - 1}))
    if not valid:
        return st.one_of(edges, st.integers(low, high))
    return mostly(st.sampled_from(valid), edges, st.integers(low, high))


def doubles(*valid: float) -> st.SearchStrategy[float]:
    """Any double: NaN, infinities, -0, huge finite, subnormal, and ``valid`` ones mostly."""
    if not valid:
        return st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats())
    return mostly(st.sampled_from(valid), st.sampled_from(SPECIAL_FLOATS), st.floats())


def long_text() -> st.SearchStrategy[str]:
    """Strings from just over a name's limit to far over a URI's, in any script."""
    return st.builds(lambda char, n: char * n,
                     st.characters(exclude_categories=("Cs",)),
                     st.sampled_from([129, 300, 2049, 5000, 70_000]))


def names(*valid: str) -> st.SearchStrategy[str]:
    """Names: ``valid`` ones mostly, empty, short junk (control characters too), very long."""
    junk = (st.just(""), st.text(max_size=24), long_text())
    return mostly(st.sampled_from(valid), *junk) if valid else st.one_of(*junk)


def repeated(element: st.SearchStrategy, *, max_size: int = 3,
             floods: tuple[int, ...] = (17, 65, 257, 1025)) -> st.SearchStrategy[list]:
    """A short list of ``element`` mostly, or one element repeated past every count limit."""
    flood = st.builds(lambda item, n: [item] * n, element, st.sampled_from(floods))
    return mostly(st.lists(element, max_size=max_size), flood, percent=85)


def _one_of_blobs(blobs: list[bytes]) -> st.SearchStrategy[bytes]:
    # By index, through a lambda: a strategy's repr would otherwise hold every blob.
    return st.integers(0, len(blobs) - 1).map(lambda i: blobs[i])


def valid_images() -> st.SearchStrategy[bytes]:
    """Small readable images, 32 to 40 px on their shorter side."""
    return _one_of_blobs([encode_png(sample_image(n, size=s))
                          for n, s in (("chelsea", 32), ("coffee", 40), ("astronaut", 36))])


def image_bytes() -> st.SearchStrategy[bytes]:
    """Valid small images, tiny ones (16 px, 1 px), the hostile corpus, and random bytes."""
    tiny = [encode_png(sample_image("rocket", size=16)),
            encode_png(sample_image("astronaut", size=40)[:, :1, :1])]
    hostile = [path.read_bytes() for path in sorted(CORPUS.iterdir())]
    return st.one_of(valid_images(), _one_of_blobs(tiny + hostile), st.binary(max_size=64))


def uris(stored: dict[str, str], store: LocalStore) -> st.SearchStrategy[str]:
    """Artifact URIs: stored objects, folders of the store, other stores and schemes, encoded
    and raw control characters, malformed and very long ones, and junk."""
    root = store.url
    crafted = [*stored.values(), root, f"{root}/", f"{root}/sha256", f"{root}/sha256/",
               f"{root}/fuzz/", "fuzz/a.png", "sha256/", "../../etc/passwd", "/etc/passwd",
               "file:///etc/passwd", "s3://bucket/key.png", "http://example.com/x.png",
               "ftp://x/y", "file://[::1/x", "s3://[x/y", f"{root}/%00.png", f"{root}/a%0a.png",
               f"{root}/{'a' * 300}.png", f"{root}/%2e%2e/%2e%2e/etc/passwd",
               f"{stored['image']}/x", "sha256/\x00", "a\nb", "é" * 1000, "x" * 2049,
               f"file://localhost:99999{root}/x", "data:image/png;base64,AAAA"]
    return mostly(st.sampled_from(crafted), st.text(max_size=40), long_text(), percent=50)


def image_refs(stored: dict[str, str], store: LocalStore) -> st.SearchStrategy:
    """``ImageRef``: inline bytes, a URI, or neither."""
    return st.one_of(
        st.just(common_pb2.ImageRef()),
        st.builds(lambda d: common_pb2.ImageRef(data=d), image_bytes()),
        st.builds(lambda u: common_pb2.ImageRef(uri=u), uris(stored, store)),
        st.builds(lambda u: common_pb2.ImageRef(uri=u), uris(stored, store)),
    )


def valid_image_refs(stored: dict[str, str]) -> st.SearchStrategy:
    """``ImageRef`` of a small readable image, inline or stored."""
    return st.one_of(st.builds(lambda d: common_pb2.ImageRef(data=d), valid_images()),
                     st.just(common_pb2.ImageRef(uri=stored["image"])))


@st.composite
def mutated(draw, build, valid: dict[str, st.SearchStrategy],
            anything: dict[str, st.SearchStrategy], weights: dict[str, int] | None = None):
    """``build(**values)`` of a valid request with a few of its parts (mostly one) drawn from
    ``anything`` instead: valid requests run, and every part is fuzzed next to valid ones (a
    bad part hides the parts checked after it). ``weights`` make some parts wild more often."""
    count = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
    names = [name for name in sorted(anything) for _ in range((weights or {}).get(name, 1))]
    wild = draw(st.lists(st.sampled_from(names), min_size=count, max_size=count, unique=True))
    return build(**{name: draw(anything[name] if name in wild else strategy)
                    for name, strategy in valid.items()})


def unknown_fields() -> st.SearchStrategy[bytes]:
    """Well-formed fields no request message knows (numbers from 1000 up), to append."""
    def encode(number: int, kind: int, value: int, data: bytes) -> bytes:
        out = _varint(number << 3 | kind)
        if kind == 0:
            return out + _varint(value)
        if kind == 1:
            return out + value.to_bytes(8, "little")
        if kind == 5:
            return out + (value & 0xFFFFFFFF).to_bytes(4, "little")
        return out + _varint(len(data)) + data

    one = st.builds(encode, st.integers(1000, 2**29 - 1), st.sampled_from([0, 1, 2, 5]),
                    st.integers(0, 2**64 - 1), st.binary(max_size=32))
    return st.lists(one, max_size=3).map(b"".join)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.fixture(scope="session")
def fuzz() -> SimpleNamespace:
    """The strategies and settings above (conftest is not importable under importlib mode)."""
    return SimpleNamespace(
        counts=COUNTS, examples=EXAMPLES, settings=FUZZ_SETTINGS, deadline=DEADLINE,
        max_pixels=MAX_PIXELS, corpus=CORPUS, layers=LAYERS, backbones=BACKBONES,
        field_names=field_names, integers=integers, doubles=doubles, names=names,
        long_text=long_text, repeated=repeated, image_bytes=image_bytes, uris=uris,
        image_refs=image_refs, valid_image_refs=valid_image_refs, mutated=mutated,
        mostly=mostly, unknown_fields=unknown_fields,
        INT32=INT32, INT64=INT64, UINT32=UINT32, SERVING=SERVING, DOCUMENTED=DOCUMENTED,
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if COUNTS:
        counts = ", ".join(f"{rpc} {n}" for rpc, n in sorted(COUNTS.items()))
        terminalreporter.write_line(f"fuzz examples per RPC: {counts}")
        for rpc in sorted({rpc for rpc, _ in CODES}):
            codes = ", ".join(f"{code} {n}" for (r, code), n in sorted(CODES.items()) if r == rpc)
            terminalreporter.write_line(f"  {rpc or 'other calls'}: {codes}")
