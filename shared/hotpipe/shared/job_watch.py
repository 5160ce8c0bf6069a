"""One subscriber connection per API process for every long-poll: jobs' channels multiplexed.

A long-poll (``GET /v1/jobs/{id}?wait=``) used to open a pub/sub connection of its own and close
it after: a TCP connect and, with redis-py's RESP3 handshake, four commands (HELLO, two CLIENT
SETINFO, CLIENT MAINT_NOTIFICATIONS) before its SUBSCRIBE — more Redis traffic than the read
itself.  Here every waiter of the process shares one connection: the first waiter of a channel
sends SUBSCRIBE and waits for Redis's confirmation (so a read after it can miss no change), the
last one to leave sends UNSUBSCRIBE, and one task reads the connection and hands each message to
the queues of that channel's waiters.

If the connection breaks, redis-py reconnects and subscribes again to every channel (often inside
its own retry, unseen by the reading task); events published meanwhile are lost, so on every
reconnection every waiter is woken with ``RESYNC`` and reads the record anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: put in every waiter's queue when events may have been lost: read the record again
RESYNC = None
#: how long the reading task waits for a message before checking it still has channels
POLL_S = 1.0
#: how long it waits before reading again after the connection failed
RETRY_S = 0.5


class Subscriber(PubSub):
    """redis-py's PubSub that calls ``on_reconnect`` each time it connected and subscribed again."""

    def __init__(self, client: aioredis.Redis, on_reconnect: Callable[[], None]):
        super().__init__(client.connection_pool)
        self.on_reconnect = on_reconnect

    async def on_connect(self, connection: Connection) -> None:
        """Subscribe again to every channel, then say events may have been lost."""
        await super().on_connect(connection)
        self.on_reconnect()


class JobWatch:
    """Channels' messages for waiters in this process, over one subscriber connection."""

    def __init__(self, client: aioredis.Redis):
        self._pubsub = Subscriber(client, self._resync)
        self._queues: dict[str, set[asyncio.Queue[str | None]]] = {}
        self._unconfirmed: dict[str, int] = {}  # SUBSCRIBEs sent, not yet confirmed, per channel
        self._confirmed: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        # redis-py's PubSub takes its connection on the first command: concurrent first
        # SUBSCRIBEs would each take one, so commands go one at a time
        self._sending = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watch(self, channel: str, timeout_s: float) -> AsyncIterator[asyncio.Queue[str | None]]:
        """A queue of ``channel``'s messages (data) from the moment the subscription is confirmed,
        or ``timeout_s`` has passed (then a ``RESYNC`` comes first, so the waiter reads again)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        first = channel not in self._queues
        self._queues.setdefault(channel, set()).add(queue)
        try:
            if first:
                self._confirmed[channel] = asyncio.Event()
                self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
                try:
                    async with self._sending:
                        await self._pubsub.subscribe(channel)
                except BaseException:
                    self._unconfirmed[channel] -= 1  # never sent: no confirmation will come
                    raise
                self._start()
            try:
                await asyncio.wait_for(self._confirmed[channel].wait(), timeout_s)
            except TimeoutError:
                queue.put_nowait(RESYNC)
            yield queue
        finally:
            await self._leave(channel, queue)

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._task
        await self._pubsub.aclose()

    async def _leave(self, channel: str, queue: asyncio.Queue[str | None]) -> None:
        waiters = self._queues.get(channel, set())
        waiters.discard(queue)
        if waiters:
            return
        self._queues.pop(channel, None)
        self._confirmed.pop(channel, None)
        with contextlib.suppress(RedisError):  # a broken connection drops its subscriptions anyway
            async with self._sending:
                await self._pubsub.unsubscribe(channel)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read(), name="job-watch")

    async def _read(self) -> None:
        while self._queues:  # (a confirmation still in flight is read by the next task)
            try:
                message = await self._pubsub.get_message(timeout=POLL_S)
            except Exception as exc:  # (a dead reading task would leave every waiter to its timeout)
                log.warning("job watch: subscriber connection failed (%s); waiters read again", exc)
                self._resync()
                await asyncio.sleep(RETRY_S)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, object]) -> None:
        channel = str(message["channel"])
        if message["type"] == "subscribe":
            # only once every SUBSCRIBE sent for it is confirmed is the latest one in force
            left = self._unconfirmed[channel] = max(0, self._unconfirmed.get(channel, 0) - 1)
            if left == 0:
                self._unconfirmed.pop(channel)
                if channel in self._confirmed:
                    self._confirmed[channel].set()
        elif message["type"] == "message":
            for queue in self._queues.get(channel, ()):
                queue.put_nowait(str(message["data"]))

    def _resync(self) -> None:
        for waiters in self._queues.values():
            for queue in waiters:
                queue.put_nowait(RESYNC)
