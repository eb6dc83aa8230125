"""An S3 artifact store through the ``minio`` client (MinIO, AWS S3, any S3-compatible server).

URL: ``s3://BUCKET?endpoint=HOST:PORT&secure=false&region=us-east-1&public_endpoint=HOST:PORT``.
Credentials come from the environment (``DREAMSUITE_S3_ACCESS_KEY`` / ``DREAMSUITE_S3_SECRET_KEY``,
else ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) and are never logged. Presigned URLs are
signed for ``public_endpoint`` (the address clients reach), which defaults to ``endpoint``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import parse_qs, quote, unquote, urlparse

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from dreamsuite.artifacts.base import (
    Artifact,
    ArtifactStore,
    Listing,
    RetryPolicy,
    check_decoded,
    check_key,
    check_uri,
    clean_metadata,
    content_key,
    suffix_for,
)
from dreamsuite.errors import InvalidArgument, NotFound, Unavailable

__all__ = ["S3Store", "S3Settings", "parse_s3_url"]

_DIGEST = "content-sha256"
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}
#: The key itself is unusable (too long, not a valid name): the caller's mistake.
_BAD_KEY = {"KeyTooLongError", "InvalidObjectName", "InvalidURI", "InvalidArgument"}
_TRANSIENT = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
              "RequestTimeTooSkewed"}
_META_PREFIX = "x-amz-meta-"


class S3Settings:
    """Parsed ``s3://`` URL (no credentials in it)."""

    def __init__(self, bucket: str, endpoint: str, secure: bool, region: str,
                 public_endpoint: str, public_secure: bool, attempts: int, timeout: float):
        self.bucket = bucket
        self.endpoint = endpoint
        self.secure = secure
        self.region = region
        self.public_endpoint = public_endpoint
        self.public_secure = public_secure
        self.attempts = attempts
        self.timeout = timeout


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidArgument(f"artifact URL parameter {name}={value!r} must be true or false")


def parse_s3_url(url: str) -> S3Settings:
    """Parse ``s3://bucket?endpoint=host:port&secure=false&...``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InvalidArgument(f"{url!r} is not an s3://BUCKET?endpoint=HOST:PORT URL")
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    endpoint = query.get("endpoint", "s3.amazonaws.com")
    secure = _flag(query.get("secure", "true"), "secure")
    try:
        attempts = int(query.get("retries", "3"))
        timeout = float(query.get("timeout", "10"))
    except ValueError as exc:
        raise InvalidArgument(f"bad artifact URL parameter in {url!r}: {exc}") from None
    return S3Settings(
        bucket=parsed.netloc, endpoint=endpoint, secure=secure,
        region=query.get("region", "us-east-1"),
        public_endpoint=query.get("public_endpoint", endpoint),
        public_secure=_flag(query.get("public_secure", str(secure)), "public_secure"),
        attempts=max(1, attempts), timeout=timeout,
    )


def _credentials() -> tuple[str | None, str | None]:
    env = os.environ
    access = env.get("DREAMSUITE_S3_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID")
    secret = env.get("DREAMSUITE_S3_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    return access, secret


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT
    return isinstance(exc, MinioException | urllib3.exceptions.HTTPError | OSError)


class S3Store(ArtifactStore):
    """Artifacts in one S3 bucket; URIs are ``s3://BUCKET/KEY``."""

    def __init__(self, settings: S3Settings, *, retry: RetryPolicy | None = None):
        self.settings = settings
        self.url = (f"s3://{settings.bucket}?endpoint={settings.endpoint}"
                    f"&secure={str(settings.secure).lower()}")
        self.retry = retry or RetryPolicy(attempts=settings.attempts)
        access, secret = _credentials()
        # Our own bounded retries replace urllib3's (which would retry a dead endpoint for long).
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(2.0, settings.timeout), read=settings.timeout),
            retries=urllib3.Retry(total=0, redirect=0), maxsize=8,
        )
        self.client = Minio(settings.endpoint, access_key=access, secret_key=secret,
                            secure=settings.secure, region=settings.region, http_client=http)
        # Signing is local when the region is known: this client never opens a connection.
        self.signer = Minio(settings.public_endpoint, access_key=access, secret_key=secret,
                            secure=settings.public_secure, region=settings.region)
        self._bucket_ready = False
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        return cls(parse_s3_url(url))

    def _call(self, what: str, fn):
        try:
            return self.retry.run(f"artifact store {self.url}: {what}", fn, _retryable)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"artifact store {self.url}: {what}: no such object") from None
            if exc.code in _BAD_KEY:
                raise InvalidArgument(f"artifact store {self.url}: {what}: not a valid object "
                                      f"name ({exc.code})") from None
            raise Unavailable(f"artifact store {self.url}: {what} failed: {exc.code}") from None

    def _ensure_bucket(self) -> None:
        with self._lock:
            if self._bucket_ready:
                return
            bucket = self.settings.bucket
            if not self._call(f"check bucket {bucket}", lambda: self.client.bucket_exists(bucket)):
                self._call(f"create bucket {bucket}",
                           lambda: self.client.make_bucket(bucket, self.settings.region))
            self._bucket_ready = True

    def put(self, data: bytes, *, content_type: str = "image/png",
            metadata: Mapping[str, str] | None = None) -> Artifact:
        key, digest = content_key(data, suffix_for(content_type))
        meta = clean_metadata(metadata)
        self._ensure_bucket()
        with contextlib.suppress(NotFound):  # content-addressed: stored already, keep it
            return self._stat(key, f"upload {key}")
        # One PUT (the object is far below the multipart threshold): S3 makes it visible whole
        # or not at all, so a failed upload leaves nothing behind.
        self._call(f"upload {key}", lambda: self.client.put_object(
            self.settings.bucket, key, io.BytesIO(data), len(data),
            content_type=content_type, metadata=meta, part_size=max(5 << 20, len(data) + 1)))
        return Artifact(self._uri(key), key, digest, len(data), content_type, meta)

    def put_at(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
               metadata: Mapping[str, str] | None = None) -> Artifact:
        check_key(key)
        digest = hashlib.sha256(data).hexdigest()
        meta = clean_metadata(metadata)
        stored = {**meta, _DIGEST: digest}  # named objects record their digest (see _stat)
        self._ensure_bucket()
        # One PUT: S3 makes the object visible whole or not at all.
        self._call(f"upload {key}", lambda: self.client.put_object(
            self.settings.bucket, key, io.BytesIO(data), len(data),
            content_type=content_type, metadata=stored, part_size=max(5 << 20, len(data) + 1)))
        return Artifact(self._uri(key), key, digest, len(data), content_type, meta)

    def _uri(self, key: str) -> str:
        """The key percent-encoded (as a file URI's path is): ``?`` and ``#`` in a key cut it
        short when the URI was read back."""
        return f"s3://{self.settings.bucket}/{quote(key, safe='/')}"

    def key_of(self, uri: str) -> str:
        check_uri(uri)
        if "://" not in uri:
            return uri
        try:
            parsed = urlparse(uri)
        except ValueError as exc:  # e.g. an unclosed "[" in the bucket
            raise InvalidArgument(f"artifact URI {uri[:200]!r} is malformed ({exc})") from None
        if parsed.scheme != "s3" or parsed.netloc != self.settings.bucket:
            raise InvalidArgument(
                f"{uri[:200]!r} is not in this service's artifact store "
                f"s3://{self.settings.bucket}")
        if parsed.query or parsed.fragment:
            raise InvalidArgument(f"artifact URI {uri[:200]!r}: a key's '?' and '#' are "
                                  "written %3F and %23")
        return check_decoded(unquote(parsed.path), uri).lstrip("/")

    def _object_key(self, uri: str) -> str:
        key = self.key_of(uri)
        if any(part in (".", "..") for part in key.split("/")):  # S3 client: a ValueError
            raise InvalidArgument(f"artifact {uri[:200]!r}: a key has no '.' or '..' parts")
        if not key or key.endswith("/"):
            raise NotFound(f"artifact {uri[:200]} names a folder of the store, not an artifact")
        return key

    def list(self, prefix: str = "", *, limit: int = 1000, start_after: str = "") -> Listing:
        if limit < 1:
            raise InvalidArgument("limit must be at least 1")
        whole = not prefix or prefix.rstrip("/") == f"s3://{self.settings.bucket}"
        key_prefix = "" if whole else self.key_of(prefix)
        self._ensure_bucket()

        def page() -> list[str]:
            objects = self.client.list_objects(self.settings.bucket, prefix=key_prefix,
                                               recursive=True, start_after=start_after or None)
            keys = []
            for obj in objects:
                if not obj.is_dir:
                    keys.append(obj.object_name)
                if len(keys) > limit:
                    break
            return keys

        keys = self._call(f"list {key_prefix or '/'}", page)
        return Listing(keys[:limit], keys[limit - 1] if len(keys) > limit else "")

    def get(self, uri: str) -> bytes:
        key = self._object_key(uri)

        def fetch() -> bytes:
            response = self.client.get_object(self.settings.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(f"download {key}", fetch)

    def stat(self, uri: str) -> Artifact:
        key = self._object_key(uri)
        return self._stat(key, f"stat {key}")

    def _stat(self, key: str, what: str) -> Artifact:
        obj = self._call(what, lambda: self.client.stat_object(self.settings.bucket, key))
        meta = {k[len(_META_PREFIX):].lower(): v for k, v in (obj.metadata or {}).items()
                if k.lower().startswith(_META_PREFIX)}
        # Named objects record their digest; content-addressed keys are their digest.
        digest = meta.pop(_DIGEST, None) or key.rsplit("/", 1)[-1].split(".", 1)[0]
        return Artifact(self._uri(key), key, digest, int(obj.size or 0),
                        obj.content_type or "application/octet-stream", meta)

    def presign(self, uri: str, *, expires_seconds: int = 3600) -> str:
        key = self._object_key(uri)
        try:
            return self.signer.presigned_get_object(
                self.settings.bucket, key, expires=timedelta(seconds=expires_seconds))
        except (MinioException, ValueError) as exc:
            raise Unavailable(f"cannot presign {uri}: {type(exc).__name__}") from None

    def close(self) -> None:
        self.client._http.clear()  # noqa: SLF001  (minio has no public close)
