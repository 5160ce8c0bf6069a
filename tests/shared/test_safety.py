"""Which input URLs and checkpoints a deployment accepts (pure checks)."""

from __future__ import annotations

import pytest

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.safety import check_public_url, checkpoint_allowed, fetch_input, is_public, parse_patterns


@pytest.mark.parametrize("address", ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1", "169.254.169.254",
                                     "10.1.2.3", "172.31.0.1", "192.168.0.1", "100.64.0.1", "0.0.0.0", "::",
                                     "fe80::1", "fd12::1", "224.0.0.1", "240.0.0.1", "198.18.0.1"])
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(address)


def test_a_name_that_resolves_to_any_internal_address_is_refused() -> None:
    def resolver(host: str, port: int) -> list[str]:
        return {"rebind.example": ["93.184.215.14", "10.0.0.1"], "ok.example": ["93.184.215.14"]}[host]

    with pytest.raises(InvalidRequest, match="private"):
        check_public_url("https://rebind.example/x.png", "inputs.image", resolver)
    check_public_url("https://ok.example/x.png", "inputs.image", resolver)


def test_http_inputs_are_off_unless_enabled() -> None:
    with pytest.raises(InvalidRequest, match="off"):
        fetch_input("https://example.com/x.png", "inputs.image", 1024, enabled=False)


def test_allowlist_parsing() -> None:
    assert parse_patterns(None) == ()
    assert parse_patterns(" a/*, ,b ") == ("a/*", "b")
    assert checkpoint_allowed("x", ())
    assert checkpoint_allowed("org/m", ("org/*",)) and not checkpoint_allowed("other/m", ("org/*",))
