"""Read and write objects by URI: local paths, file:// and s3:// (any S3-compatible server).

The S3 endpoint and keys come from the standard variables: AWS_ENDPOINT_URL_S3 (or
MLFLOW_S3_ENDPOINT_URL), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. Writes are atomic: a local
file is written beside its target and renamed; an S3 PUT is atomic by itself.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from heart_mlops.errors import StorageError

BUCKETS = ("data", "mlflow")


def join(base: str, *parts: str) -> str:
    """`base` and `parts` joined by single slashes, for URIs and paths: join("s3://data/", "/a")
    -> "s3://data/a". Pure string work: no check that anything exists."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def _split(uri: str) -> tuple[str, str, str]:
    """-> (scheme, bucket or '', key or local path)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return "s3", parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme == "file":
        return "file", "", unquote(parsed.path)
    if parsed.scheme in ("",) or len(parsed.scheme) == 1:  # plain path (or a Windows drive)
        return "file", "", uri
    raise StorageError(
        f"unsupported URI scheme '{parsed.scheme}' in {uri}; use a path, file:// or s3://"
    )


def s3_endpoint() -> str | None:
    """The S3 server's URL: AWS_ENDPOINT_URL_S3, else MLFLOW_S3_ENDPOINT_URL, else None (AWS)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")


@lru_cache(maxsize=4)
def _client(endpoint: str | None, access_key_id: str | None):
    import boto3
    from botocore.config import Config

    # a session of its own: boto3's default session keeps the first credentials it resolved
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )


def s3_client():
    """A boto3 S3 client of the current endpoint and access key (path-style addressing, 3
    attempts, 5 s connect and 30 s read timeouts), cached per endpoint and key."""
    return _client(s3_endpoint(), os.environ.get("AWS_ACCESS_KEY_ID"))


def _s3_error(exc: Exception, uri: str) -> StorageError:
    return StorageError(f"S3 store at {s3_endpoint() or 'AWS'} failed for {uri}: {exc}")


def read_bytes(uri: str) -> bytes:
    """The whole object at `uri` (path, file:// or s3://). StorageError for an unsupported
    scheme, a missing file, object or bucket, a directory, or an S3 failure; other local
    failures (permissions) raise OSError."""
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        try:
            return Path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"no such file: {key}") from None
        except IsADirectoryError:
            raise StorageError(f"{key} is a directory, not a data file") from None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            raise StorageError(f"no such object: {uri}") from None
        raise _s3_error(exc, uri) from None
    except BotoCoreError as exc:
        raise _s3_error(exc, uri) from None


def write_bytes(uri: str, payload: bytes) -> str:
    """Write `payload` at `uri` atomically, creating local parent directories. -> `uri`.
    StorageError for an unsupported scheme or an S3 failure; OSError for a local one."""
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        target = Path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return uri
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client().put_object(Bucket=bucket, Key=key, Body=payload)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, uri) from None
    return uri


def list_keys(uri: str) -> list[str]:
    """URIs of every object under a prefix."""
    scheme, bucket, key = _split(uri)
    if scheme == "file":
        root = Path(key)
        return sorted(p.as_uri() for p in root.rglob("*") if p.is_file()) if root.exists() else []
    paginator = s3_client().get_paginator("list_objects_v2")
    prefix = key.rstrip("/") + "/"
    return [
        f"s3://{bucket}/{obj['Key']}"
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]


def write_json(uri: str, value) -> str:
    """`value` as indented JSON (str() for other types) at `uri`, as `write_bytes`. -> `uri`"""
    return write_bytes(uri, json.dumps(value, indent=2, default=str).encode())


def read_json(uri: str):
    """The JSON value at `uri`. StorageError as `read_bytes`; JSONDecodeError if not JSON."""
    return json.loads(read_bytes(uri))


def write_frame(uri: str, frame: pd.DataFrame) -> str:
    """`frame` as Parquet (its index dropped) at `uri`, as `write_bytes`. -> `uri`"""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return write_bytes(uri, buffer.getvalue())


def read_frame(uri: str) -> pd.DataFrame:
    """The DataFrame of the Parquet file at `uri` (written by `write_frame`), with a fresh
    RangeIndex. StorageError as `read_bytes`."""
    return pd.read_parquet(io.BytesIO(read_bytes(uri)))


def ensure_buckets(buckets=BUCKETS) -> list[str]:
    """Create the S3 buckets that are missing; returns those created."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    try:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        created = [b for b in buckets if b not in existing]
        for bucket in created:
            client.create_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(exc, "bucket creation") from None
    return created


def ensure_bucket_of(uri: str) -> None:
    """Create the bucket of an s3:// URI if it is missing; nothing for local URIs.
    StorageError for an unsupported scheme or an S3 failure."""
    scheme, bucket, _ = _split(uri)
    if scheme == "s3":
        ensure_buckets((bucket,))
