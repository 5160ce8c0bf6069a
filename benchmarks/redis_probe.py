"""Counts what a process sends to Redis: commands and round trips, by command name.

Loaded into the stack's processes by ``benchmarks.redis_cost`` (a ``sitecustomize`` it writes puts
``install()`` first thing in every Python process it starts): redis-py packs every command it sends
through ``PythonRespSerializer.pack`` (one call per command, pipelined or not), and writes each batch
with one ``send_packed_command`` (one call per round trip: a pipeline's batch, a MULTI/EXEC block, a
single command, a blocking BRPOP alike).  Both are wrapped here, for the sync client (Kombu, the
worker, the API's sync store) and the asyncio one (the API's long-poll; it packs with its own
``_pack_command_python`` when hiredis is absent, as here).  Every ``DUMP_S`` a thread
writes this process's counts to ``$HOTPIPE_REDIS_PROBE_DIR/<role>-<pid>.json``; a forked child (the
prefork pool's) starts from zero under role ``<parent role>-child``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

#: how often a process writes its counts
DUMP_S = 0.2
#: where the counts go (set by the benchmark for the stack's processes only)
DIR_ENV = "HOTPIPE_REDIS_PROBE_DIR"

_state: dict[str, Any] = {"role": "other", "counts": Counter()}
_lock = threading.Lock()


def role_of(argv: list[str]) -> str:
    """``api``, ``worker`` (the Celery parent) or ``other``, from the process's command line."""
    for name in ("api", "worker"):
        if name in argv:
            return name
    return "other"


def owner() -> str:
    """``celery`` when the code sending is Kombu's or Celery's (their bookkeeping, their events), else ``hotpipe``."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("redis.", "benchmarks.redis_probe", "asyncio")):
            return "celery" if name.startswith(("kombu", "celery")) else "hotpipe"
        frame = frame.f_back  # type: ignore[assignment]
    return "hotpipe"


def count(key: str) -> None:
    key = f"{owner()} {key}"
    with _lock:
        _state["counts"][key] += 1


#: commands whose second word names a subcommand (``INFO commandstats`` lists ``client|setinfo``)
CONTAINERS = frozenset({"client", "config", "script", "object", "memory", "pubsub", "command", "function",
                        "xinfo", "cluster", "acl", "latency", "slowlog", "module"})


def command_name(args: tuple[Any, ...]) -> str:
    """The command's name as ``INFO commandstats`` spells it (``evalsha``, ``client|setinfo``)."""
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
    first = words[0].lower().split(" ")  # redis-py sends some as one word ("SCRIPT LOAD")
    if len(first) == 1 and len(words) > 1 and first[0] in CONTAINERS:
        first.append(words[1].lower())
    return "|".join(first[:2]) if first[0] in CONTAINERS and len(first) > 1 else first[0]


def _dump(folder: Path) -> None:
    while True:
        with _lock:
            data = {"role": _state["role"], "counts": dict(_state["counts"])}
        tmp = folder / f".{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(folder / f"{data['role']}-{os.getpid()}.json")
        time.sleep(DUMP_S)


def _start_dumper(folder: Path) -> None:
    threading.Thread(target=_dump, args=(folder,), daemon=True, name="redis-probe").start()


def _after_fork(folder: Path) -> None:
    _state["counts"] = Counter()
    _state["role"] = _state["role"] + "-child"
    _start_dumper(folder)


def _wrap() -> None:
    import redis.asyncio.connection as aconn
    import redis.connection as conn

    pack = conn.PythonRespSerializer.pack

    def counted_pack(self: Any, *args: Any) -> Any:
        count("cmd " + command_name(args))
        return pack(self, *args)

    send = conn.AbstractConnection.send_packed_command

    def counted_send(self: Any, command: Any, check_health: bool = True) -> Any:
        count("rt")
        return send(self, command, check_health)

    apack = aconn.AbstractConnection._pack_command_python  # the asyncio client's packer without hiredis

    def counted_apack(self: Any, *args: Any) -> Any:
        count("cmd " + command_name(args))
        return apack(self, *args)

    asend = aconn.AbstractConnection.send_packed_command

    async def counted_asend(self: Any, command: Any, check_health: bool = True) -> Any:
        count("rt")
        return await asend(self, command, check_health)

    conn.PythonRespSerializer.pack = counted_pack  # type: ignore[method-assign]
    conn.AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    aconn.AbstractConnection._pack_command_python = counted_apack  # type: ignore[method-assign]
    aconn.AbstractConnection.send_packed_command = counted_asend  # type: ignore[method-assign]


def install() -> None:
    """Count this process's Redis traffic, if the benchmark asked for it (``$HOTPIPE_REDIS_PROBE_DIR``)."""
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return
    _state["role"] = role_of(sys.argv)
    _wrap()
    _start_dumper(Path(folder))
    os.register_at_fork(after_in_child=lambda: _after_fork(Path(folder)))


def read_all(folder: Path) -> dict[str, Counter[str]]:
    """Every process's counts, summed by role; what Kombu and Celery sent under ``<role>/celery``."""
    out: dict[str, Counter[str]] = {}
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, n in data["counts"].items():
            who, what = key.split(" ", 1)
            role = data["role"] if who == "hotpipe" else f"{data['role']}/{who}"
            out.setdefault(role, Counter())[what] += n
    return out
