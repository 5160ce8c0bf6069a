"""Storage against a real S3-compatible server: keys, round trips, presigned URLs, caller references."""

from __future__ import annotations

import json

import httpx
import pytest

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import new_job_id
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage


@pytest.mark.parametrize(("prefix", "image", "sidecar", "input_"), [
    ("jobs", "jobs/j1/0.png", "jobs/j1/job.json", "jobs/j1/inputs/image.png"),
    ("/a/b/", "a/b/j1/0.png", "a/b/j1/job.json", "a/b/j1/inputs/image.png"),
    ("", "j1/0.png", "j1/job.json", "j1/inputs/image.png"),
])
def test_keys_are_deterministic(prefix: str, image: str, sidecar: str, input_: str) -> None:
    st = Storage(Settings(s3_prefix=prefix), client=object())  # keys need no server
    assert (st.image_key("j1", 0, "png"), st.sidecar_key("j1"), st.input_key("j1", "image", "png")) == (
        image, sidecar, input_)
    assert st.image_key("j1", 3, "webp") == image.replace("0.png", "3.webp")


def test_put_get_round_trip(storage: Storage) -> None:
    key = storage.image_key(new_job_id(), 0, "png")
    assert not storage.exists(key)
    storage.put(key, b"\x89PNG first", "image/png")
    storage.put(key, b"\x89PNG retried", "image/png")  # a retried attempt overwrites, never adds beside
    assert storage.exists(key)
    assert storage.get(key) == b"\x89PNG retried"
    head = storage.client.head_object(Bucket=storage.bucket, Key=key)
    assert head["ContentType"] == "image/png"


def test_sidecar_round_trip(storage: Storage) -> None:
    job_id = new_job_id()
    doc = {"job": job_id, "seed": 7, "nested": {"steps": [1, 2]}}
    storage.put_json(storage.sidecar_key(job_id), doc)
    assert json.loads(storage.get(storage.sidecar_key(job_id))) == doc
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=storage.job_prefix(job_id) + "/")
    assert [o["Key"] for o in listed["Contents"]] == [f"jobs/{job_id}/job.json"]


def test_presigned_url_serves_the_object(storage: Storage) -> None:
    key = storage.image_key(new_job_id(), 1, "webp")
    storage.put(key, b"RIFF fake webp", "image/webp")
    response = httpx.get(storage.presign(key), timeout=30)
    assert response.status_code == 200
    assert response.content == b"RIFF fake webp"
    assert response.headers["content-type"] == "image/webp"


def test_get_bounded_refuses_missing_and_oversized_objects(storage: Storage) -> None:
    key = storage.input_key(new_job_id(), "image", "png")
    with pytest.raises(InvalidRequest, match="upload it first") as exc:
        storage.get_bounded(key, "inputs.image", 100)
    assert exc.value.field == "inputs.image"
    storage.put(key, b"x" * 101, "image/png")
    with pytest.raises(InvalidRequest, match="larger than 100 bytes"):
        storage.get_bounded(key, "inputs.image", 100)
    assert storage.get_bounded(key, "inputs.image", 101) == b"x" * 101


def test_key_from_uri_accepts_our_bucket_and_prefix(storage: Storage) -> None:
    assert storage.key_from_uri("s3://hotpipe-test/jobs/abc/inputs/image.png", "inputs.image") == (
        "jobs/abc/inputs/image.png")


@pytest.mark.parametrize("uri", [
    "s3://other-bucket/jobs/abc/image.png",
    "s3://hotpipe-test/other/abc/image.png",
    "s3://hotpipe-test/jobsx/abc/image.png",
    "s3://hotpipe-test/jobs",
    "s3://hotpipe-test/",
    "s3://hotpipe-test",
    "s3://hotpipe-test/jobs/../secret.png",
    "s3://hotpipe-test/jobs/abc/../../secret.png",
    "s3://hotpipe-test/jobs/..",
    "s3:///jobs/abc/image.png",
])
def test_key_from_uri_refuses_anything_else(storage: Storage, uri: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        storage.key_from_uri(uri, "inputs.mask_image")
    assert (exc.value.field, exc.value.status_code) == ("inputs.mask_image", 422)
    assert "s3://hotpipe-test/jobs/" in exc.value.message
