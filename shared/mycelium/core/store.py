"""One storage API over a local directory and S3, chosen by URL.

>>> s = open_store("file:///tmp/mycelium-doctest")
>>> s.put_json("r/x.json", {"a": 1}); s.get_json("r/x.json")
{'a': 1}

Keys are '/'-separated and relative to the store's root. Local writes are atomic
(temp file + rename), so a crash never leaves a half-written object behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import env
from .errors import MissingKeyError, StoreError

_UMASK = os.umask(0)
os.umask(_UMASK)


class Store(ABC):
    url: str

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys that start with ``prefix`` (a plain string prefix, as S3 does), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it does not exist."""

    def get_json(self, key: str) -> Any:
        data = self.get(key)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(key, f"not valid JSON: {e}") from e

    def put_json(self, key: str, obj: Any) -> None:
        self.put(key, json_bytes(obj))

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the store is local (for tools that want a file)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def jsonl(data: bytes) -> list[str]:
    """The records of a JSONL file. Lines end at "\\n" only: str.splitlines would also split at U+2028 and the
    other Unicode line breaks, which a record's text may hold unescaped (pydantic writes them as they are)."""
    return [line for line in data.decode().split("\n") if line.strip()]


def json_bytes(obj: Any) -> bytes:
    """How JSON objects are stored: indented for people, UTF-8."""
    return json.dumps(obj, indent=1, ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes: how commits, manifests and chunks name what they hold."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
        raise StoreError(key, "invalid key (empty, absolute, or with '.'/'..' parts)")
    return key


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingKeyError(key) from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files follow the umask
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        # A prefix is a string prefix, as on S3: "run/p1" matches "run/p1/x" and "run/p1x.json".
        # Walk the directory that holds every such key, then filter.
        walk_root = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not walk_root.is_dir():
            return iter(())
        keys = []
        for dirpath, _, files in os.walk(walk_root):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        return self._path(key)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", client=None):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client or boto3.client("s3", endpoint_url=env.s3_endpoint())

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise MissingKeyError(key) from None

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        full = (self.prefix + "/" if self.prefix else "") + prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
        for page in pages:  # S3 lists keys in UTF-8 binary order: already sorted
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]


def open_store(url: str | None = None) -> Store:
    """``runs/`` or a plain path or ``file://…`` -> LocalStore; ``s3://bucket/prefix`` -> S3Store."""
    url = url or env.default_store_url()
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(url, "s3 URL needs a bucket: s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        if parsed.netloc:
            raise StoreError(url, "file URLs take an absolute path: file:///abs/dir (three slashes)")
        return LocalStore(parsed.path)
    if parsed.scheme == "":
        return LocalStore(url)
    raise StoreError(url, f"unsupported store URL scheme {parsed.scheme!r} (use a path, file:// or s3://)")
