"""Fetches connect only to the address they checked: a DNS answer that changes (rebinding) can't
move them inward.  Real HTTP(S) servers on two loopback addresses show where each request went."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from hotpipe.shared import egress
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.safety import check_public_url, fetch_input
from tests.twin_hosts import NAME, PRIVATE, PUBLIC, rebinding, tls_files, twin_hosts

FIELD = "inputs.image"


def fetch(url: str) -> bytes:
    return fetch_input(url, FIELD, 1024, enabled=True)


def test_an_http_stack_that_resolves_by_itself_is_sent_inward(monkeypatch: pytest.MonkeyPatch) -> None:
    """The setup rebinds for real: the check passes, and a plain client then reaches PRIVATE."""
    with twin_hosts() as twins:
        rebinding(monkeypatch)
        url = f"http://{NAME}:{twins.port}/x.png"
        check_public_url(url, FIELD)
        assert httpx.get(url, trust_env=False).text == PRIVATE
        assert twins.got(PRIVATE) and not twins.got(PUBLIC)


def test_a_fetch_reaches_only_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with twin_hosts() as twins:
        lookups = rebinding(monkeypatch)
        body = fetch(f"http://{NAME}:{twins.port}/x.png")
        assert body == PUBLIC.encode()
        assert twins.got(PUBLIC) == [f"{NAME}:{twins.port}"] and twins.got(PRIVATE) == []
        assert lookups == [NAME]


def test_a_name_that_rebinds_inward_after_the_check_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with twin_hosts() as twins:
        lookups = rebinding(monkeypatch)
        url = f"http://{NAME}:{twins.port}/x.png"
        check_public_url(url, FIELD)  # the first answer: public
        with pytest.raises(InvalidRequest, match="private") as refused:
            fetch(url)
        assert refused.value.field == FIELD
        assert twins.got(PUBLIC) == twins.got(PRIVATE) == []
        assert lookups == [NAME, NAME]


def test_one_inward_address_among_public_ones_refuses_the_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    with twin_hosts() as twins:
        rebinding(monkeypatch)
        monkeypatch.setattr(egress, "resolve_host", lambda host, port: [PUBLIC, PRIVATE])
        with pytest.raises(InvalidRequest, match=PRIVATE):
            fetch(f"http://{NAME}:{twins.port}/x.png")
        assert twins.got(PUBLIC) == twins.got(PRIVATE) == []


def test_https_is_pinned_and_still_verified_against_the_name(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    server_tls, ca_file = tls_files(tmp_path, NAME)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the client trusts the test CA (and nothing else)
    with twin_hosts(tls=server_tls) as twins:
        lookups = rebinding(monkeypatch)
        body = fetch(f"https://{NAME}:{twins.port}/x.png")
        assert body == PUBLIC.encode()
        assert twins.got(PUBLIC) == [f"{NAME}:{twins.port}"] and twins.got(PRIVATE) == []
        assert lookups == [NAME]


def test_https_to_a_certificate_for_another_name_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server_tls, ca_file = tls_files(tmp_path, "other.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    with twin_hosts(tls=server_tls) as twins:
        rebinding(monkeypatch)
        with pytest.raises(InvalidRequest, match="could not fetch") as refused:
            fetch(f"https://{NAME}:{twins.port}/x.png")
        assert "ConnectError" in refused.value.message
        assert twins.got(PUBLIC) == twins.got(PRIVATE) == []


def test_an_unresolvable_host_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    monkeypatch.setattr(egress, "resolve_host", nowhere)
    with pytest.raises(InvalidRequest, match=re.escape("cannot resolve 'nowhere.invalid'")):
        fetch("http://nowhere.invalid/x.png")


def test_resolve_host_lists_each_address_once() -> None:
    assert egress.resolve_host("127.0.0.1", 80) == ["127.0.0.1"]
