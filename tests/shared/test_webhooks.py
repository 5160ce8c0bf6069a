"""Webhook signatures and URL checks."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.webhooks import check_webhook_url, signature, signed_headers, verify

SECRET = "s3cret"
BODY = b'{"id": "abc", "status": "succeeded"}'


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1700000000, BODY) == f"v1={expected}"


def test_signed_headers_verify() -> None:
    headers = signed_headers(SECRET, "completed", "abc.3", BODY, now=1700000000)
    assert (headers["Hotpipe-Event"], headers["Hotpipe-Event-Id"]) == ("completed", "abc.3")
    assert verify(SECRET, headers, BODY, now=1700000010)


@pytest.mark.parametrize("tamper", ["body", "secret", "timestamp", "old", "missing"])
def test_verify_refuses_anything_tampered_or_stale(tamper: str) -> None:
    headers = signed_headers(SECRET, "completed", "abc.3", BODY, now=1700000000)
    body, secret, now = BODY, SECRET, 1700000010.0
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif tamper == "secret":
        secret = "other"
    elif tamper == "timestamp":
        headers["Hotpipe-Timestamp"] = "1700000001"
    elif tamper == "old":
        now = 1700000000 + 301
    else:
        del headers["Hotpipe-Signature"]
    assert not verify(secret, headers, body, now=now)


def resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolve


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "example.com/x",
                                 "http://example.com:99999/x"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_webhook_url(url, allow_private=True)
    assert err.value.field == "webhook_url"


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1",
                                     "172.16.0.5", "0.0.0.0"])
def test_private_addresses_are_refused_unless_allowed(address: str) -> None:
    with pytest.raises(InvalidRequest, match="public addresses only"):
        check_webhook_url("https://hooks.example.com/x", allow_private=False,
                          resolve=resolver("93.184.216.34", address))
    check_webhook_url("https://hooks.example.com/x", allow_private=True, resolve=resolver(address))


def test_a_public_host_is_accepted_and_an_unresolvable_one_refused() -> None:
    check_webhook_url("https://hooks.example.com/x", allow_private=False, resolve=resolver("93.184.216.34"))

    def nowhere(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror("no such host")
    with pytest.raises(InvalidRequest, match="does not resolve"):
        check_webhook_url("https://nowhere.invalid/x", allow_private=False, resolve=nowhere)
