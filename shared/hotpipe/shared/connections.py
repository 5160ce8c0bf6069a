"""Redis connections, built in one place from settings: one Redis, or the primary Sentinel names.

Every Redis client of hotpipe comes from here: the job store, the API's asyncio reader (event
streams, ``?wait=``), the webhook dispatcher, the registry, the reaper and the workers' runtime
use ``sync_client`` / ``async_client``; the Celery broker uses ``broker_url`` and
``broker_transport_options``.  With ``HOTPIPE_REDIS_SENTINELS`` set, a client is redis-py's
``Sentinel.master_for``: each new connection asks the sentinels where the primary is, and a
connection error drops the old one, so after a failover the next call (or retry) reaches the
new primary without a restart.  The broker is Kombu's ``sentinel://`` transport, which does
the same for Celery's consumer and its reconnects.  (Celery has no result backend here: the job
records are the results, so the broker is Celery's only connection.)

``check_redis`` is the start-up check: a Sentinel configuration that no sentinel answers, or
whose master name no sentinel knows, is refused before the API or a worker starts.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.connection import parse_url
from redis.sentinel import Sentinel

from hotpipe.shared.settings import ENV_PREFIX, Settings

#: timeouts of the sentinels' own connections: an unreachable sentinel is skipped quickly
SENTINEL_TIMEOUT_S = 1.0
#: what the primary's connections take from HOTPIPE_REDIS_URL when the sentinels name the host
_URL_PARTS = ("db", "username", "password")


def uses_sentinel(settings: Settings) -> bool:
    """Whether Redis is found through sentinels (``HOTPIPE_REDIS_SENTINELS``)."""
    return bool(settings.sentinel_addresses())


def primary_options(settings: Settings) -> dict[str, Any]:
    """Database, user and password of the primary, from ``HOTPIPE_REDIS_URL`` (its host is unused)."""
    parsed = parse_url(settings.redis_url)
    out = {name: parsed[name] for name in _URL_PARTS if parsed.get(name) is not None}
    if settings.redis_url.startswith("rediss://"):
        out["ssl"] = True
    return out


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """Options of the connections to the sentinels themselves (their own ACL user and password)."""
    out: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    if settings.redis_sentinel_username:
        out["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password:
        out["password"] = settings.redis_sentinel_password
    return out


def sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A redis-py client on the Redis of ``settings``, with connection ``options`` (timeouts, decoding)."""
    if not uses_sentinel(settings):
        return redis.Redis.from_url(settings.redis_url, **options)
    sentinel = Sentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_options(settings))
    return sentinel.master_for(settings.redis_master_name, redis_class=redis.Redis,
                               **primary_options(settings), **options)


def async_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio redis-py client on the Redis of ``settings``; make it inside the event loop that uses it."""
    if not uses_sentinel(settings):
        return aioredis.Redis.from_url(settings.redis_url, **options)
    sentinel = AsyncSentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_options(settings))
    return sentinel.master_for(settings.redis_master_name, redis_class=aioredis.Redis,
                               **primary_options(settings), **options)


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: ``HOTPIPE_REDIS_URL``, or one ``sentinel://`` URL per sentinel, ``;``-joined
    (each with the primary's user, password and database, which Kombu reads from the first)."""
    if not uses_sentinel(settings):
        return settings.redis_url
    parsed = primary_options(settings)
    user, password = parsed.get("username") or "", parsed.get("password")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return ";".join(f"sentinel://{auth}{host}:{port}/{parsed.get('db', 0)}"
                    for host, port in settings.sentinel_addresses())


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """What Kombu's Sentinel transport needs beyond the URL (the master name, the sentinels' password)."""
    if not uses_sentinel(settings):
        return {}
    return {"master_name": settings.redis_master_name, "sentinel_kwargs": sentinel_options(settings)}


def check_redis(settings: Settings) -> None:
    """Refuse a Sentinel configuration that cannot work (``ValueError`` naming the setting).

    No sentinel answers: ``HOTPIPE_REDIS_SENTINELS`` is wrong (or they are all down).  None of
    those that answer knows ``HOTPIPE_REDIS_MASTER_NAME``: the name is wrong.  A known name whose
    primary is down right now is not refused: that is a failover under way, and readiness
    reports it.  A plain ``HOTPIPE_REDIS_URL`` is not checked here (the services wait for it).
    """
    addresses = settings.sentinel_addresses()
    if not addresses:
        return
    answered: list[str] = []
    known: set[str] = set()
    for host, port in addresses:
        masters = _masters_of(settings, host, port)
        if masters is not None:
            answered.append(f"{host}:{port}")
            known.update(masters)
    listed = ", ".join(f"{h}:{p}" for h, p in addresses)
    if not answered:
        raise ValueError(f"{ENV_PREFIX}REDIS_SENTINELS={settings.redis_sentinels!r}: no sentinel answered at "
                         f"{listed}; give the host:port of running sentinels (usually port 26379)")
    if settings.redis_master_name not in known:
        raise ValueError(f"{ENV_PREFIX}REDIS_MASTER_NAME={settings.redis_master_name!r}: no sentinel at "
                         f"{', '.join(answered)} knows a primary by that name (they know: "
                         f"{', '.join(sorted(known)) or 'none'}); use the name of their `sentinel monitor` line")


def _masters_of(settings: Settings, host: str, port: int) -> list[str] | None:
    """The master names one sentinel monitors; None when it does not answer as a sentinel."""
    client = redis.Redis(host=host, port=port, decode_responses=True, **sentinel_options(settings))
    try:
        masters = client.sentinel_masters()  # name -> state (a list of states under RESP3)
        return list(masters) if isinstance(masters, dict) else [m["name"] for m in masters]
    except redis.AuthenticationError as exc:
        raise ValueError(f"{ENV_PREFIX}REDIS_SENTINEL_PASSWORD: the sentinel at {host}:{port} refused it "
                         f"({exc}); set the sentinels' own password (and {ENV_PREFIX}REDIS_SENTINEL_USERNAME "
                         "with ACLs)") from exc
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):  # down, or a Redis but no sentinel
        return None
    finally:
        client.close()
