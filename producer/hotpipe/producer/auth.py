"""API keys and tenants: who is calling, from ``Authorization: Bearer <key>``.

Keys are never stored, only their SHA-256 (hex), each mapped to a tenant: from the
``api_keys`` setting (``hash:tenant,...``) and the ``api_keys_file`` (``hash tenant`` per
line).  A leaked configuration therefore leaks no key.  With no keys configured every
request is tenant ``default`` and the API says so loudly at start-up: that is for local
stacks only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hotpipe.shared.errors import Unauthorized
from hotpipe.shared.keys import DEFAULT_TENANT
from hotpipe.shared.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "hp_"
ENTRY_RE = re.compile(r"^(\S+?)(?::|\s+)(\S+)$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
NO_KEYS_WARNING = ("NO API KEYS CONFIGURED: every request is accepted without authentication as tenant "
                   "'default'. Set HOTPIPE_API_KEYS or HOTPIPE_API_KEYS_FILE before exposing this API.")


def hash_key(key: str) -> str:
    """The SHA-256 (hex) of an API key: what the configuration holds instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _entry(hashed: str, tenant: str, where: str) -> tuple[str, str]:
    hashed, tenant = hashed.strip().lower(), tenant.strip()
    if not HASH_RE.match(hashed):
        raise ValueError(f"{where}: {hashed[:12]!r}... is not a SHA-256 hex digest; store hash_key(key), "
                         "never the key itself (`hotpipe keys new` prints both)")
    if not TENANT_RE.match(tenant):
        raise ValueError(f"{where}: tenant {tenant!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return hashed, tenant


def parse_keys(text: str, where: str) -> dict[str, str]:
    """``hash:tenant`` pairs separated by commas or newlines (``#`` starts a comment)."""
    table: dict[str, str] = {}
    for raw in re.split(r"[,\n]", text):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pair = ENTRY_RE.match(line)
        if pair is None:
            raise ValueError(f"{where}: {line[:12]!r}... is not `sha256-hex:tenant` (or `sha256-hex tenant`)")
        key, value = _entry(pair[1], pair[2], where)
        table[key] = value
    return table


@dataclass(frozen=True)
class KeyTable:
    """Key hashes -> tenants; empty means authentication is off."""

    tenants: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyTable:
        table: dict[str, str] = {}
        if settings.api_keys:
            table.update(parse_keys(settings.api_keys, "HOTPIPE_API_KEYS"))
        if settings.api_keys_file:
            table.update(parse_keys(Path(settings.api_keys_file).read_text(), str(settings.api_keys_file)))
        return cls(table)

    @property
    def enabled(self) -> bool:
        return bool(self.tenants)

    def tenant(self, key: str | None) -> str:
        """The tenant of a presented key; raises ``Unauthorized`` when authentication is on and it fails."""
        if not self.enabled:
            return DEFAULT_TENANT
        if not key:
            raise Unauthorized("this API needs an API key: send `Authorization: Bearer <key>`",
                               field="authorization")
        presented = hash_key(key)
        for hashed, tenant in self.tenants.items():
            if hmac.compare_digest(presented, hashed):
                return tenant
        raise Unauthorized("the API key is not valid; check it or ask the operator for one", field="authorization")

    def warn_if_open(self) -> None:
        if not self.enabled:
            log.warning(NO_KEYS_WARNING)


BEARER = HTTPBearer(auto_error=False, description="An API key; required when the server has keys configured.")


async def current_tenant(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> str:
    """The calling tenant, from ``Authorization: Bearer <key>`` (401 when keys are configured and it fails).

    ``async`` though it awaits nothing: a hash and a lookup, so it runs on the event loop instead
    of costing every request a hop through the thread pool (FastAPI runs a plain ``def``
    dependency there)."""
    key_table: KeyTable = request.app.state.key_table
    return key_table.tenant(credentials.credentials if credentials else None)


Tenant = Annotated[str, Depends(current_tenant)]


def reading_tenant(request: Request, tenant: Tenant) -> str:
    """The calling tenant of a read route, after its read token (429 when over the read limit)."""
    request.app.state.read_limit.take_token(tenant)
    return tenant


#: a read route's tenant: authenticated, then counted against the tenant's read limit
ReadingTenant = Annotated[str, Depends(reading_tenant)]
