"""Client of the dream service, and ``dreamsuite dream --remote HOST:PORT``.

>>> with DreamClient("localhost:50051") as client:
...     for update in client.dream(request_from_config(config, image_bytes)):
...         print(update.octave, update.loss)
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import grpc

from dreamsuite.clients import DEFAULT_MAX_MESSAGE_BYTES, auth_metadata, open_channel
from dreamsuite.dream import DreamConfig
from dreamsuite.errors import (
    Cancelled,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    WeightsMissing,
)
from dreamsuite.v1 import common_pb2, dream_pb2, dream_pb2_grpc

__all__ = ["DreamClient", "request_from_config", "image_ref", "fetch_url", "run_remote_dream"]

#: Status codes back to library errors, so the CLI reports them like local failures.
_REMOTE_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: WeightsMissing,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def image_ref(source: str | bytes | os.PathLike) -> common_pb2.ImageRef:
    """Inline bytes, an artifact URI (``s3://``, ``file://``), or a local file read inline."""
    if isinstance(source, bytes):
        return common_pb2.ImageRef(data=source)
    text = os.fspath(source)
    if text.startswith(("s3://", "file://")):
        return common_pb2.ImageRef(uri=text)
    path = Path(text)
    if not path.is_file():
        raise InvalidArgument(f"image {text!r} does not exist or is not a file")
    return common_pb2.ImageRef(data=path.read_bytes())


def _maplist(config: DreamConfig) -> common_pb2.Maplist | None:
    if config.maplist is None:
        return None
    return common_pb2.Maplist(layers=[
        common_pb2.LayerTerm(
            layer=t.layer, weight=t.weight,
            channels=[common_pb2.ChannelWeight(channel=c, weight=w)
                      for c, w in (t.channels or {}).items()])
        for t in config.maplist.terms
    ])


def request_from_config(
    config: DreamConfig,
    image: str | bytes | os.PathLike,
    *,
    guides: Sequence[str | bytes | os.PathLike] = (),
    output: dream_pb2.OutputOptions | None = None,
) -> dream_pb2.DreamRequest:
    """The ``DreamRequest`` for ``config`` (every field set explicitly) and the images."""
    return dream_pb2.DreamRequest(
        image=image_ref(image),
        backbone=config.backbone,
        weights=(common_pb2.WEIGHTS_RANDOM if config.weights == "random"
                 else common_pb2.WEIGHTS_PRETRAINED),
        maplist=_maplist(config),
        schedule=dream_pb2.OctaveSchedule(octaves=config.octaves,
                                          octave_scale=config.octave_scale,
                                          steps=config.steps, step_size=config.step_size),
        regularisers=dream_pb2.Regularisers(jitter=config.jitter, tv=config.tv,
                                            smooth=config.smooth, blur_every=config.blur_every,
                                            blur_sigma=config.blur_sigma),
        guidance=dream_pb2.Guidance(
            guides=[image_ref(g) for g in guides],
            mode=(dream_pb2.GUIDE_MODE_MATCH if config.guide_mode == "match"
                  else dream_pb2.GUIDE_MODE_WEIGHTS)),
        tile=config.tile,
        seed=config.seed,
        output=output,
    )


class DreamClient:
    """A blocking client of ``DreamService`` (TLS when ``tls_ca`` or ``$DREAMSUITE_TLS_CA`` is
    set; bearer token from ``token`` or ``$DREAMSUITE_TOKEN``)."""

    def __init__(self, target: str, *, token: str | None = None, tls_ca: str | None = None,
                 server_name: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.channel = open_channel(target, tls_ca=tls_ca, server_name=server_name,
                                    max_message_bytes=max_message_bytes)
        self.stub = dream_pb2_grpc.DreamServiceStub(self.channel)
        self.metadata = auth_metadata(token)

    def dream(self, request: dream_pb2.DreamRequest, *,
              timeout: float | None = None) -> Iterator[dream_pb2.DreamUpdate]:
        """The stream of updates, one per octave; cancel it by closing the iterator."""
        call = self.stub.Dream(request, timeout=timeout, metadata=self.metadata)
        try:
            yield from call
        finally:
            call.cancel()

    def list_backbones(self, *, timeout: float | None = 30) -> dream_pb2.ListBackbonesResponse:
        return self.stub.ListBackbones(dream_pb2.ListBackbonesRequest(), timeout=timeout,
                                       metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> DreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_url(url: str, *, timeout: float = 60) -> bytes:
    """GET a presigned ``http(s)://`` URL, or read a ``file://`` URL of a local store."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).read_bytes()
    if parsed.scheme not in ("http", "https"):
        raise InvalidArgument(f"cannot fetch {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (checked above)
        return response.read()


def _image_bytes(inline: bytes, artifact: common_pb2.Artifact) -> bytes:
    return inline or fetch_url(artifact.presigned_url)


def run_remote_dream(args: argparse.Namespace) -> int:
    """``dreamsuite dream --remote HOST:PORT ...``: the local command's options, the service's
    device; a progress bar per octave; the final PNG (and ``--save-octaves``) saved locally."""
    from dreamsuite.cli.dreaming import ProgressBar, load_from_png
    from dreamsuite.cli.engine import config_from_args

    if args.device:
        print("note: --device is ignored with --remote (the service chose its device)",
              file=sys.stderr)
    base, recorded_input, recorded_guides = load_from_png(args)
    source = args.input or recorded_input
    if not source:
        raise InvalidArgument("give an INPUT image (or --from-png of a dream that recorded one)")
    config = config_from_args(args, base)
    octave_dir = Path(args.save_octaves) if args.save_octaves else None
    output = dream_pb2.OutputOptions(preview_format=dream_pb2.PREVIEW_FORMAT_NONE,
                                     store_octaves=octave_dir is not None, inline_images=True)
    # A stored dream records artifact URIs for its input and guides: --from-png reuses them.
    request = request_from_config(config, source, guides=args.guide or recorded_guides,
                                  output=output)
    bar = ProgressBar(config.octaves, enabled=not args.quiet)
    try:
        with DreamClient(args.remote) as client:
            result = _follow(client.dream(request), bar, octave_dir)
    except grpc.RpcError as exc:
        error = _REMOTE_ERRORS.get(exc.code(), Unavailable)
        raise error(f"{args.remote}: {exc.code().name}: {exc.details()}") from None
    finally:
        bar.close()
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_image_bytes(result.image, result.artifact))
    print(f"wrote {path} ({result.width}x{result.height}, final loss "
          f"{result.octave_losses[-1]:.4g}); stored as {result.artifact.uri}")
    return 0


def _follow(updates: Iterator[dream_pb2.DreamUpdate], bar,
            octave_dir: Path | None) -> dream_pb2.DreamResult:
    result = None
    for update in updates:
        bar.bar.total = update.octaves
        bar.update(update.octave, update.octaves, update.loss, (update.height, update.width))
        if octave_dir is not None:
            octave_dir.mkdir(parents=True, exist_ok=True)
            data = _image_bytes(update.image, update.octave_artifact)
            (octave_dir / f"octave_{update.octave + 1:02d}.png").write_bytes(data)
        if update.HasField("result"):
            result = update.result
    if result is None:
        raise Unavailable("the dream service ended the stream without a result")
    return result
