"""S3-compatible object storage through boto3: AWS S3, Cloudflare R2, MinIO, moto.

boto3 blocks, so each call runs in a thread of the store's own pool (boto3
clients are thread-safe); one client serves the crawl. The pool is sized for
uploads in flight: at ~500 ms an upload, a handful of threads would cap the
whole crawl.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from emomo.blocking import DedicatedThread
from emomo.config import StorageConfig
from emomo.errors import BackendUnavailable, ConfigError


def endpoint_url(config: StorageConfig) -> str | None:
    """``host[:port]`` as the seed writes it, with the scheme from use_ssl; a full URL as it is."""
    endpoint = config.endpoint.strip().rstrip("/")
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    return f"{'https' if config.use_ssl else 'http'}://{endpoint}"


class S3ObjectStore:
    def __init__(self, config: StorageConfig) -> None:
        if config.type == "r2" and not config.endpoint:
            raise ConfigError("storage.endpoint is empty: set STORAGE_ENDPOINT to <account>.r2.cloudflarestorage.com")
        if not config.bucket:
            raise ConfigError("storage.bucket is empty: name the bucket that holds the memes")
        self.bucket = config.bucket
        self.create_bucket = config.create_bucket
        self.endpoint = endpoint_url(config)
        self.public_url = config.public_url
        region = config.region or ("auto" if config.type == "r2" else "us-east-1")
        self.region = region
        self._threads = DedicatedThread("emomo-s3", workers=config.max_connections)
        import boto3
        from botocore.config import Config

        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=config.access_key.get_secret_value() or None,
            aws_secret_access_key=config.secret_key.get_secret_value() or None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                          max_pool_connections=config.max_connections),
        )

    def _error_code(self, exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def _open(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"bucket {self.bucket!r} at {self.endpoint or 'AWS S3'}"
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = self._error_code(exc)
            if code not in ("404", "NoSuchBucket", "NotFound"):
                if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    raise BackendUnavailable(
                        f"storage: access to {where} refused ({code}); check STORAGE_ACCESS_KEY and "
                        "STORAGE_SECRET_KEY") from None
                raise BackendUnavailable(f"storage: {where}: {code or exc}") from None
        except BotoCoreError as exc:
            raise BackendUnavailable(f"storage.endpoint / STORAGE_ENDPOINT: cannot reach {where}: {exc}") from None
        if not self.create_bucket:
            raise BackendUnavailable(
                f"storage.bucket: {where} does not exist; create it, or set storage.create_bucket: true")
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region not in ("us-east-1", "auto"):
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._client.create_bucket(**kwargs)

    async def open(self) -> None:
        await self._threads.run(self._open)

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if self._error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _put(self, key: str, data: bytes, content_type: str) -> bool:
        # Keys are content addresses: an object already there holds these bytes.
        if self._exists(key):
            return False
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                CacheControl="public, max-age=31536000, immutable")
        return True

    async def put(self, key: str, data: bytes, content_type: str) -> bool:
        return await self._threads.run(self._put, key, data, content_type)

    async def get(self, key: str) -> bytes:
        def get() -> bytes:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        return await self._threads.run(get)

    async def delete(self, key: str) -> None:
        await self._threads.run(lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    async def exists(self, key: str) -> bool:
        return await self._threads.run(self._exists, key)

    async def list_objects(self) -> AsyncIterator[tuple[str, float]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, PaginationConfig={
            "PageSize": 1000})
        iterator = iter(pages)
        while True:
            page = await self._threads.run(next, iterator, None)
            if page is None:
                return
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["LastModified"].timestamp()

    def url(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{key}"
        if self.endpoint:
            return f"{self.endpoint}/{self.bucket}/{key}"  # path-style, as S3-compatible servers serve it
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{key}"

    def presigned_url(self, key: str, expires: int = 3600) -> str:
        """A URL that shows the object for ``expires`` seconds to whoever holds it (signed here,
        no request is made): for a private bucket without ``public_url``. It carries the access
        key's id, never the secret."""
        return str(self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires))

    async def close(self) -> None:
        await self._threads.run(self._client.close)
        self._threads.shutdown()
