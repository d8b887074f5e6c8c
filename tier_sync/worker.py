"""MQTT adapter: the connect, serve and reconnect loop shared by the outbox publisher and the tier receiver."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from storage import StorageError
from tier_sync.mqtt_session import (
    REASON_SESSION_TAKEN_OVER,
    REASON_UNSPECIFIED_ERROR,
    Backoff,
    SessionSettings,
    disconnect_reason,
    make_client,
)
from tier_sync.node_lock import NodeLock

if TYPE_CHECKING:
    from storage import TicketStore

log = structlog.get_logger(__name__)

# Two broker-side closes of an established session within this window count as a takeover.
TAKEOVER_WINDOW_S = 60.0


class MqttWorker:
    """Keeps one persistent MQTT session alive and runs ``_serve`` while connected.

    Subclasses implement ``_serve(client)``, which returns only by raising: an
    ``aiomqtt.MqttError`` when the connection breaks, a ``StorageError`` when the
    database fails. Both lead to a reconnect after an exponential backoff with jitter.
    """

    role = "worker"

    def __init__(
        self,
        store: TicketStore,
        broker_host: str,
        broker_port: int,
        node_id: str,
        client_id: str,
        session: SessionSettings,
        takeover_backoff_s: float,
        *,
        use_lock: bool = True,
    ) -> None:
        self.store = store
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.node_id = node_id
        self.client_id = client_id
        self._session = session
        self._takeover_backoff_s = takeover_backoff_s
        self._lock = NodeLock(store.path, self.role, node_id) if use_lock else None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.connections = 0
        self.takeovers = 0
        self._broker_closes: list[float] = []

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def start(self) -> None:
        """Take the node lock (raises NodeAlreadyRunning) and start the session task."""
        if self._task is not None:
            raise RuntimeError(f"{self.role} of node {self.node_id} is already started")
        if self._lock is not None:
            self._lock.acquire()
        self._task = asyncio.create_task(self._run(), name=f"{self.role}-{self.node_id}")
        log.info(f"{self.role} started", node_id=self.node_id, client_id=self.client_id,
                 broker=f"{self.broker_host}:{self.broker_port}")

    async def stop(self) -> None:
        """Cancel the session task, wait for it to finish, and release the node lock."""
        task, self._task = self._task, None
        try:
            if task is not None:
                await _cancel_until_done(task)
        finally:
            self._connected.clear()
            if self._lock is not None:
                self._lock.release()
        log.info(f"{self.role} stopped", node_id=self.node_id, client_id=self.client_id)

    async def _serve(self, client: aiomqtt.Client) -> None:
        raise NotImplementedError

    def _looks_like_takeover(self, code: int | None) -> bool:
        """Tell a session takeover from other broker-side closes.

        An MQTT 5 broker may report it with reason code 142. mosquitto 2.0.11 does not: it
        just closes the old connection, which paho reports as code 128. Two such closes
        within ``TAKEOVER_WINDOW_S`` are therefore taken as two clients fighting over
        one client id. NOTE: a single takeover by a client that then stays connected is
        only logged as "mqtt connection lost" until our reconnect kicks it off in turn.
        """
        if code == REASON_SESSION_TAKEN_OVER:
            return True
        if code != REASON_UNSPECIFIED_ERROR:
            return False

        now = time.monotonic()
        self._broker_closes = [moment for moment in self._broker_closes if now - moment < TAKEOVER_WINDOW_S]
        self._broker_closes.append(now)
        return len(self._broker_closes) >= 2

    async def _run(self) -> None:
        backoff = Backoff(self._session.backoff_initial_s, self._session.backoff_max_s)
        while True:
            delay = await self._run_one_session(backoff)
            await asyncio.sleep(delay)

    async def _run_one_session(self, backoff: Backoff) -> float:
        """Connect, serve until the session breaks, and return the delay before the next attempt."""
        client = make_client(self.broker_host, self.broker_port, self.client_id, self._session)
        ids = {"node_id": self.node_id, "client_id": self.client_id}
        established = False
        try:
            async with client:
                established = True
                self.connections += 1
                backoff.reset()
                self._connected.set()
                log.info("mqtt connected", connection=self.connections, **ids)
                await self._serve(client)
        except aiomqtt.MqttError as exc:
            code, cause = disconnect_reason(exc)
            delay = backoff.next_delay()

            if established and self._looks_like_takeover(code):
                self.takeovers += 1
                delay = max(delay, self._takeover_backoff_s)
                log.error(
                    "mqtt session taken over: another client connected with the same client id; "
                    "check for a second sync process or a stale deployment of this node",
                    reason_code=code, takeovers=self.takeovers, retry_in_s=round(delay, 2), **ids,
                )
            elif established:
                log.warning("mqtt connection lost", reason_code=code, cause=cause,
                            retry_in_s=round(delay, 2), **ids)
            else:
                log.warning("mqtt connect failed", reason_code=code, cause=cause, attempt=backoff.attempt,
                            retry_in_s=round(delay, 2), **ids)
            return delay
        except StorageError as exc:
            delay = backoff.next_delay()
            log.error("sync stopped by a storage error; reconnecting", error=str(exc),
                      retry_in_s=round(delay, 2), **ids)
            return delay
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sync worker crashed", **ids)
            raise
        finally:
            self._connected.clear()

        # _serve returned without an error, which only a closed message stream causes.
        delay = backoff.next_delay()
        log.warning("mqtt message stream ended", retry_in_s=round(delay, 2), **ids)
        return delay


class HandlerPool:
    """Runs message handlers as tasks, at most ``limit`` at once, for one MQTT session.

    ``spawn`` waits for a free slot before it starts the handler, so a reading loop that
    spawns each message's handler stops reading while ``limit`` handlers are busy. The
    first error a handler raises is re-raised by ``watch``, which the session runs next
    to its loops, so a failed publish or write still ends the session as it would inline.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"handler limit must be at least 1, not {limit}")
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed = asyncio.Event()
        self._error: BaseException | None = None

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def spawn(self, handler: Coroutine[Any, Any, None]) -> None:
        """Start ``handler`` once a slot is free."""
        try:
            await self._slots.acquire()
        except BaseException:
            handler.close()
            raise
        task = asyncio.create_task(handler)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if task.cancelled() or task.exception() is None or self._error is not None:
            return
        self._error = task.exception()
        self._failed.set()

    async def watch(self) -> None:
        """Wait until a handler fails and raise its error."""
        await self._failed.wait()
        assert self._error is not None
        raise self._error

    async def drain(self) -> None:
        """Wait until every started handler has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def cancel(self) -> None:
        """Cancel the running handlers and wait for them to end."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class KeyedLocks:
    """One ``asyncio.Lock`` per key, created on first use and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]


async def run_until_first_done(*coroutines: object) -> None:
    """Run coroutines as tasks until one finishes; cancel the rest and re-raise the first error."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]  # type: ignore[arg-type]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it keeps running.

    On Python 3.11, ``asyncio.wait_for`` (which aiomqtt 2.5 uses to wait for a PUBACK)
    returns the result and drops the cancellation when both arrive in the same loop
    iteration. Python 3.12 rewrote ``wait_for`` without that race. Until then a worker
    loop can run on after one ``cancel()``, and ``stop()`` would wait for it forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError):
        await task
