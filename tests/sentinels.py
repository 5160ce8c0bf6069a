"""A Redis Sentinel group of real processes on loopback: a primary, replicas, and sentinels.

The sentinels watch the primary as ``MASTER_NAME`` with a short ``down-after-milliseconds``
and ``failover-timeout``, so killing the primary promotes a replica within a few seconds.
"""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from hotpipe.devstack import Proc, ServiceError, free_port, spawn, wait_until

MASTER_NAME = "hotpipe-primary"
#: how long the sentinels wait before calling the primary down, and the failover's own timeout
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class SentinelGroup:
    """The processes of one group and where they listen; stop them all with ``close``."""

    workdir: Path
    binary: str
    primary_port: int = 0
    replica_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)
    _exit: ExitStack = field(default_factory=ExitStack)

    @property
    def sentinels(self) -> str:
        """``HOTPIPE_REDIS_SENTINELS`` for this group."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        """The settings that point a hotpipe process at this group."""
        return {"HOTPIPE_REDIS_SENTINELS": self.sentinels, "HOTPIPE_REDIS_MASTER_NAME": MASTER_NAME}

    def primary_address(self) -> tuple[str, int]:
        """The primary the first answering sentinel names now."""
        for port in self.sentinel_ports:
            try:
                named: Any = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if named:
                return str(named[0]), int(named[1])
        raise ServiceError("no sentinel names a primary")

    def wait_for_failover(self, old_port: int, timeout_s: float = 30.0) -> int:
        """The port of the new primary, once the sentinels name one other than ``old_port``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.primary_address()[1]
            if port != old_port and redis.Redis(port=port).role()[0] == b"master":
                return port
            time.sleep(0.1)
        raise ServiceError(f"no failover away from port {old_port} after {timeout_s} s")

    def close(self) -> None:
        self._exit.close()

    def _redis(self, name: str, port: int, *extra: str) -> None:
        argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--repl-diskless-sync-delay", "0", *extra]
        self._keep(spawn(name, argv, self.workdir), port)

    def _sentinel(self, index: int, port: int) -> None:
        conf = self.workdir / f"sentinel{index}.conf"  # Sentinel rewrites its file: one each
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2\n"
                        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                        f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self._keep(spawn(f"sentinel{index}", [self.binary, str(conf), "--sentinel"], self.workdir), port)

    def _keep(self, proc: Proc, port: int) -> None:
        self.procs[proc.name] = proc
        self._exit.callback(proc.kill_group)
        wait_until(lambda: _listening(port), proc, 20)


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def start_group(workdir: Path, binary: str, replicas: int = 1, sentinels: int = 3) -> SentinelGroup:
    """A primary, ``replicas`` replicas of it (in sync) and ``sentinels`` sentinels that all know it."""
    group = SentinelGroup(workdir, binary)
    try:
        group.primary_port = free_port()
        group._redis("primary", group.primary_port)
        for i in range(replicas):
            group.replica_ports.append(free_port())
            group._redis(f"replica{i}", group.replica_ports[-1], "--replicaof", "127.0.0.1", str(group.primary_port))
        for i in range(sentinels):
            group.sentinel_ports.append(free_port())
            group._sentinel(i, group.sentinel_ports[-1])
        _wait_in_sync(group, replicas)
    except BaseException:
        group.close()
        raise
    return group


def _wait_in_sync(group: SentinelGroup, replicas: int, timeout_s: float = 30.0) -> None:
    """Until the primary has ``replicas`` replicas online (synced, acknowledging) and every sentinel
    knows them and each other."""
    primary = redis.Redis(port=group.primary_port, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = primary.info("replication")
        online = sum(1 for i in range(replicas) if info.get(f"slave{i}", {}).get("state") == "online")
        states: list[Any] = [redis.Redis(port=p, decode_responses=True).sentinel_master(MASTER_NAME)
                             for p in group.sentinel_ports]
        seen = [int(state["num-slaves"]) for state in states]
        others = [int(state["num-other-sentinels"]) for state in states]
        if online == replicas and min(seen) == replicas and min(others) == len(group.sentinel_ports) - 1 \
                and _acknowledged(primary, replicas):
            return
        time.sleep(0.2)
    raise ServiceError("the sentinel group did not come together in time")


def _acknowledged(primary: redis.Redis, replicas: int) -> bool:
    """Whether the replicas acknowledge a write (``WAIT``).  Redis 7.0 lists a replica ``online`` as soon
    as its sync ends, but it answers no ``WAIT`` for about a second after that (measured: the first
    WAITs after a group starts time out, every later one returns at once), and tests of submits that
    wait for a replica must start from a replica that acknowledges."""
    if replicas == 0:
        return True
    primary.set("hotpipe-test:replication-probe", time.monotonic())
    return int(primary.execute_command("WAIT", replicas, 100)) >= replicas
