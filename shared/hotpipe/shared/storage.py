"""S3-compatible object storage: deterministic keys, uploads, sidecars, presigned URLs.

Configured from settings (endpoint, bucket, prefix, region); credentials come from
boto3's usual chain.  Keys are deterministic, ``{prefix}/{job_id}/{index}.{ext}``, so a
retried attempt overwrites what an earlier one wrote instead of adding beside it.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.settings import Settings

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
SIDECAR_NAME = "job.json"


def json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


class Storage:
    """One bucket + prefix; every object key hotpipe writes is built here."""

    def __init__(self, settings: Settings, client: Any | None = None):
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix.strip("/")
        self.presign_expiry_s = settings.presign_expiry_s
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-put")
        self.client = client or boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            config=Config(signature_version="s3v4",
                          retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
                          s3={"addressing_style": "path"}),
        )

    # -- keys -------------------------------------------------------------------------
    def job_prefix(self, job_id: str) -> str:
        return f"{self.prefix}/{job_id}" if self.prefix else job_id

    def image_key(self, job_id: str, index: int, ext: str) -> str:
        return f"{self.job_prefix(job_id)}/{index}.{ext}"

    def sidecar_key(self, job_id: str) -> str:
        return f"{self.job_prefix(job_id)}/{SIDECAR_NAME}"

    def input_key(self, job_id: str, name: str, ext: str) -> str:
        return f"{self.job_prefix(job_id)}/inputs/{name}.{ext}"

    def upload_key(self, tenant: str, name: str, ext: str) -> str:
        """Where ``POST /v1/uploads`` puts an input image: ``{prefix}/_uploads/{tenant}/{name}.{ext}``
        (job ids never start with ``_``, so no job's folder can be this one)."""
        return f"{self.prefix + '/' if self.prefix else ''}_uploads/{tenant}/{name}.{ext}"

    def uri(self, key: str) -> str:
        """The ``s3://bucket/key`` reference of one of our objects."""
        return f"s3://{self.bucket}/{key}"

    def key_from_uri(self, uri: str, field: str) -> str:
        """The key of an ``s3://bucket/key`` reference, refused unless it is in our bucket+prefix."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        inside = key.startswith(self.prefix + "/") if self.prefix else bool(key)
        if not uri.startswith("s3://") or bucket != self.bucket or not inside or ".." in key.split("/"):
            where = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"
            raise InvalidRequest(f"{field} must be an object under {where}", field=field)
        return key

    # -- objects ----------------------------------------------------------------------
    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, key: str, doc: dict[str, Any]) -> None:
        self.put(key, json_bytes(doc), "application/json")

    def put_async(self, key: str, data: bytes, content_type: str) -> Future[None]:
        """Start a put in the background; ``.result()`` waits for it and raises its error."""
        return self._pool.submit(self.put, key, data, content_type)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def put_many(self, objects: list[tuple[str, bytes, str]]) -> None:
        """Put (key, data, content type) objects concurrently; raises if any put failed."""
        if len(objects) == 1:
            self.put(*objects[0])
            return
        futures = [self._pool.submit(self.put, *obj) for obj in objects]
        for future in futures:
            future.result()

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def get_bounded(self, key: str, field: str, max_bytes: int) -> bytes:
        """A caller-named object, refused (422) when missing or larger than ``max_bytes``."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise InvalidRequest(f"{field}: no object s3://{self.bucket}/{key}; upload it first",
                                 field=field) from exc
        if head["ContentLength"] > max_bytes:
            raise InvalidRequest(f"{field} is larger than {max_bytes} bytes; send a smaller image", field=field)
        return self.get(key)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def presign(self, key: str) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_expiry_s)
        return url

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (local stacks and tests; production buckets pre-exist)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
