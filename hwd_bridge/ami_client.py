"""AMI adapter: one supervised Asterisk Manager Interface session with actions, events and reconnects.

``AmiClient`` connects, reads the banner, logs in before sending anything else, waits for
``FullyBooted`` and then serves ``action()``, ``originate()`` and event subscriptions. After a
lost connection it reconnects with exponential backoff and jitter. Actions in flight fail with
``AmiConnectionLost`` and are never re-sent. Wrong credentials raise ``AmiAuthenticationError``
and stop the client for good.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from hwd_bridge.ami_errors import (
    AmiActionError,
    AmiAuthenticationError,
    AmiClientClosed,
    AmiConnectionError,
    AmiConnectionLost,
    AmiError,
    AmiNotConnected,
    AmiProtocolError,
    AmiTimeout,
)
from hwd_bridge.ami_protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AmiFramer,
    AmiMessage,
    HeadersArg,
    encode_action,
)

log = structlog.get_logger(__name__)

EventHandler = Callable[[AmiMessage], "Awaitable[None] | None"]
ReconnectHook = Callable[["AmiClient"], Awaitable[None]]

# Actions the client sends itself; callers use the matching methods instead.
_MANAGED_ACTIONS = frozenset({"login", "logoff", "challenge", "originate"})

_READ_SIZE = 64 * 1024


class OriginateResult(enum.Enum):
    """Final outcome of an asynchronous Originate, from the ``Reason`` of ``OriginateResponse``."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CONGESTION = "congestion"
    FAILED = "failed"


# Reason codes are Asterisk's control frame types (enum ast_control_frame_type in
# include/asterisk/frame.h): 1 hangup, 3 still ringing when the timeout expired, 4 answered,
# 5 busy, 8 congestion. 0 means no channel could be created at all.
_ORIGINATE_REASONS = {
    0: OriginateResult.FAILED,
    1: OriginateResult.FAILED,
    3: OriginateResult.NO_ANSWER,
    4: OriginateResult.ANSWERED,
    5: OriginateResult.BUSY,
    8: OriginateResult.CONGESTION,
}


def originate_result_from_reason(reason: str | None) -> OriginateResult:
    """Map the ``Reason`` header of an ``OriginateResponse`` event; unknown codes are failures."""
    if reason is None or not reason.strip().isdigit():
        return OriginateResult.FAILED
    return _ORIGINATE_REASONS.get(int(reason), OriginateResult.FAILED)


class QueueMembership(enum.Enum):
    """Result of ``queue_add`` and ``queue_remove``; both repeat safely."""

    ADDED = "added"
    ALREADY_MEMBER = "already_member"
    REMOVED = "removed"
    NOT_MEMBER = "not_member"


def is_already_there(reply: AmiMessage | AmiActionError) -> bool:
    """Return True for QueueAdd's ``Unable to add interface: Already there`` error.

    A caller logging an agent in may treat it as success, because the member is in the queue.
    """
    return _error_message_endswith(reply, "already there")


def is_not_there(reply: AmiMessage | AmiActionError) -> bool:
    """Return True for QueueRemove's ``Unable to remove interface: Not there`` error."""
    return _error_message_endswith(reply, "not there")


def _error_message_endswith(reply: AmiMessage | AmiActionError, suffix: str) -> bool:
    response = reply.response if isinstance(reply, AmiActionError) else reply
    if response.kind != "response" or response.name.lower() != "error":
        return False
    message = response.get("Message") or ""
    return message.strip().lower().endswith(suffix)


@dataclass(frozen=True, slots=True)
class AmiActionResult:
    """Reply to one action: the response, plus the event list when the response announced one.

    ``events`` contains the list items in order; ``completion`` is the ``...Complete`` event.
    Both stay empty unless the response carried ``EventList: start``.
    """

    response: AmiMessage
    events: tuple[AmiMessage, ...] = ()
    completion: AmiMessage | None = None

    @property
    def is_list(self) -> bool:
        return self.response.starts_event_list


@dataclass(frozen=True, slots=True)
class OriginateOutcome:
    """The ``OriginateResponse`` event of one Originate, mapped to an ``OriginateResult``."""

    result: OriginateResult
    reason_code: int | None
    channel: str | None
    uniqueid: str | None
    event: AmiMessage


@dataclass(frozen=True, slots=True)
class AmiClientStats:
    """Counters since the client was created."""

    events_received: int
    events_dispatched: int
    events_dropped: int
    handler_failures: int
    sessions: int


class ReconnectBackoff:
    """Exponential backoff with jitter: the n-th consecutive failure waits up to min * 2**(n-1).

    The delay is drawn from [cap / 2, cap] so clients restarted together spread out, and the
    cap never exceeds ``max_delay_s``.
    """

    def __init__(self, min_delay_s: float, max_delay_s: float, rng: random.Random | None = None) -> None:
        if min_delay_s <= 0 or max_delay_s < min_delay_s:
            raise ValueError(
                f"reconnect delays must satisfy 0 < min <= max, got min={min_delay_s} max={max_delay_s}"
            )
        self.min_delay_s = min_delay_s
        self.max_delay_s = max_delay_s
        self._rng = rng or random.Random()

    def cap_s(self, failures: int) -> float:
        exponent = min(max(failures - 1, 0), 32)
        return min(self.max_delay_s, self.min_delay_s * float(2**exponent))

    def delay_s(self, failures: int) -> float:
        cap = self.cap_s(failures)
        return self._rng.uniform(cap / 2, cap)


class Subscription:
    """One registered event handler; ``cancel()`` unregisters it."""

    def __init__(self, client: AmiClient, handler: EventHandler, event_names: frozenset[str] | None) -> None:
        self._client = client
        self.handler = handler
        self.event_names = event_names

    def matches(self, event: AmiMessage) -> bool:
        return self.event_names is None or event.name.lower() in self.event_names

    def cancel(self) -> None:
        self._client._subscriptions.discard(self)


class OriginateCall:
    """An Originate that Asterisk accepted (``queued``); ``outcome()`` waits for the call's result."""

    def __init__(
        self,
        client: AmiClient,
        action_id: str,
        queued_response: AmiMessage,
        outcome_future: asyncio.Future[AmiMessage],
        default_timeout_s: float,
    ) -> None:
        self._client = client
        self.action_id = action_id
        self.queued_response = queued_response
        self._outcome_future = outcome_future
        self._default_timeout_s = default_timeout_s

    async def outcome(self, timeout: float | None = None) -> OriginateOutcome:
        """Wait for the ``OriginateResponse`` event with this ActionID.

        Raises ``AmiTimeout`` when it does not arrive within ``timeout`` seconds (default:
        the ring timeout plus a margin), and ``AmiConnectionLost`` when the connection drops
        first, because the event is then lost even if the call goes on.
        """
        timeout_s = self._default_timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout_s):
                event = await asyncio.shield(self._outcome_future)
        except TimeoutError:
            self._client._forget_originate(self.action_id)
            raise AmiTimeout(
                f"no OriginateResponse for ActionID {self.action_id} within {timeout_s} s",
                action="Originate",
                action_id=self.action_id,
                timeout_s=timeout_s,
            ) from None

        reason = event.get("Reason")
        reason_code = int(reason) if reason is not None and reason.strip().isdigit() else None
        return OriginateOutcome(
            result=originate_result_from_reason(reason),
            reason_code=reason_code,
            channel=event.get("Channel"),
            uniqueid=event.get("Uniqueid"),
            event=event,
        )


@dataclass(eq=False)
class _PendingAction:
    name: str
    action_id: str
    future: asyncio.Future[AmiActionResult]
    response: AmiMessage | None = None
    events: list[AmiMessage] = field(default_factory=list)


@dataclass(eq=False)
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    framer: AmiFramer
    banner: asyncio.Future[str]
    booted: asyncio.Future[AmiMessage]
    closed: asyncio.Future[str]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def is_closed(self) -> bool:
        return self.closed.done()


class _RateLimitedCounter:
    """Count repeats per key and say when a summary may be logged (at most once per interval)."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._unreported: dict[Any, int] = {}
        self._last_report: dict[Any, float] = {}

    def record(self, key: Any) -> int | None:
        """Count one occurrence; return how many to report now, or None to stay quiet."""
        self._unreported[key] = self._unreported.get(key, 0) + 1
        now = self._clock()
        last = self._last_report.get(key)
        if last is not None and now - last < self._interval_s:
            return None
        self._last_report[key] = now
        return self._unreported.pop(key)

    def drain(self) -> dict[Any, int]:
        unreported, self._unreported = self._unreported, {}
        return unreported


def _fail_future(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.done():
        return
    future.set_exception(exc)
    # Mark it retrieved, so asyncio does not warn when nobody awaits this future any more.
    future.exception()


class AmiClient:
    """A supervised AMI session: ``async with AmiClient(...) as ami: await ami.action("Ping")``.

    Times are in seconds. ``on_reconnected`` runs in its own task after every new session
    except the first one, once Asterisk reported ``FullyBooted``; use it to re-read queue
    and channel state, because events sent while disconnected are lost.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        boot_timeout: float = 120.0,
        ping_interval: float = 20.0,
        event_queue_size: int = 10_000,
        reconnect_min_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        drop_log_interval: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_reconnected: ReconnectHook | None = None,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("action_timeout", action_timeout),
            ("boot_timeout", boot_timeout),
            ("ping_interval", ping_interval),
            ("event_queue_size", event_queue_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._connect_timeout_s = connect_timeout
        self._action_timeout_s = action_timeout
        self._boot_timeout_s = boot_timeout
        self._ping_interval_s = ping_interval
        self._max_message_bytes = max_message_bytes
        self._on_reconnected = on_reconnected
        self._backoff = ReconnectBackoff(reconnect_min_delay, reconnect_max_delay, rng)

        # A random prefix keeps ActionIDs unique across clients that share one AMI user.
        id_prefix = secrets.token_hex(4)
        self._action_ids = (f"{id_prefix}-{n}" for n in itertools.count(1))

        self._session: _Session | None = None
        self._pending: dict[str, _PendingAction] = {}
        self._originates: dict[str, asyncio.Future[AmiMessage]] = {}
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._fatal_error: AmiAuthenticationError | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._hook_task: asyncio.Task[None] | None = None

        self._events: asyncio.Queue[AmiMessage] = asyncio.Queue(maxsize=event_queue_size)
        self._subscriptions: set[Subscription] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._drop_log_interval_s = drop_log_interval
        self._drop_counter: _RateLimitedCounter | None = None
        self._failure_counter: _RateLimitedCounter | None = None

        self._events_received = 0
        self._events_dispatched = 0
        self._events_dropped = 0
        self._handler_failures = 0
        self._sessions = 0

    # ----- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> AmiClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the session supervisor and wait until the first session is ready.

        Keeps retrying an unreachable Asterisk (wrap the call in ``asyncio.timeout`` to bound
        it) and raises ``AmiAuthenticationError`` at once on wrong credentials.
        """
        if self._supervisor is not None:
            raise RuntimeError("AmiClient.start() was already called")

        loop = asyncio.get_running_loop()
        self._drop_counter = _RateLimitedCounter(self._drop_log_interval_s, loop.time)
        self._failure_counter = _RateLimitedCounter(self._drop_log_interval_s, loop.time)
        self._dispatcher = asyncio.create_task(self._dispatch_events(), name="ami-dispatcher")
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")

        try:
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Log off, close the connection and stop the background tasks; safe to call twice."""
        if self._closed.is_set() and self._supervisor is None:
            return
        self._stopping = True

        session = self._session
        if session is not None and self._ready.is_set():
            await self._log_off(session)

        for task in (self._hook_task, self._supervisor, self._dispatcher):
            if task is not None and not task.done():
                task.cancel()
        tasks = [task for task in (self._hook_task, self._supervisor, self._dispatcher) if task is not None]
        if tasks:
            await asyncio.wait(tasks)
        self._supervisor = None
        self._dispatcher = None
        self._hook_task = None

        self._fail_in_flight(AmiClientClosed("AMI client stopped before the reply arrived"))
        self._closed.set()
        self._flush_rate_limited_logs()
        log.info(
            "ami_client_stopped",
            host=self.host,
            port=self.port,
            events_received=self._events_received,
            events_dropped=self._events_dropped,
            handler_failures=self._handler_failures,
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until a session is logged in and Asterisk is fully booted.

        Raises ``AmiAuthenticationError`` after a rejected login, ``AmiClientClosed`` once
        stopped, and ``AmiNotConnected`` when ``timeout`` passes first.
        """
        if not self._ready.is_set():
            ready_wait = asyncio.ensure_future(self._ready.wait())
            closed_wait = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait(
                    {ready_wait, closed_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                ready_wait.cancel()
                closed_wait.cancel()

        if self._fatal_error is not None:
            raise self._fatal_error
        if self._closed.is_set():
            raise AmiClientClosed("AMI client is stopped")
        if not self._ready.is_set():
            raise AmiNotConnected(
                f"no AMI session to {self.host}:{self.port} became ready within {timeout} s"
            )

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    @property
    def fatal_error(self) -> AmiAuthenticationError | None:
        return self._fatal_error

    @property
    def stats(self) -> AmiClientStats:
        return AmiClientStats(
            events_received=self._events_received,
            events_dispatched=self._events_dispatched,
            events_dropped=self._events_dropped,
            handler_failures=self._handler_failures,
            sessions=self._sessions,
        )

    # ----- actions -----------------------------------------------------------------------

    async def action(
        self, name: str, headers: HeadersArg = None, *, timeout: float | None = None
    ) -> AmiActionResult:
        """Send one action and return its reply, with the event list when there is one.

        A reply is a list only when the response carries ``EventList: start``; the list then
        ends with the ``...Complete`` event. ``timeout`` (default ``action_timeout``) covers
        waiting for a ready session and the whole reply.

        Raises ``AmiActionError`` on ``Response: Error``, ``AmiTimeout`` when the reply is
        late, ``AmiNotConnected`` when no session was ready (nothing was sent), and
        ``AmiConnectionLost`` when the connection dropped after sending (outcome unknown).
        """
        if name.lower() in _MANAGED_ACTIONS:
            raise ValueError(
                f"AMI action {name!r} is managed by AmiClient; use its methods (start, stop, originate)"
            )
        return await self._call(name, headers, timeout=timeout)

    async def originate(
        self,
        channel: str,
        *,
        context: str | None = None,
        exten: str | None = None,
        priority: int = 1,
        application: str | None = None,
        data: str | None = None,
        caller_id: str | None = None,
        ring_timeout_ms: int = 30_000,
        variables: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        account: str | None = None,
        channel_id: str | None = None,
        timeout: float | None = None,
        outcome_margin_s: float = 30.0,
    ) -> OriginateCall:
        """Send an Originate with ``Async: true`` and return once Asterisk queued it.

        Give either ``context`` and ``exten`` or ``application``. Each variable is sent as
        its own ``Variable: NAME=value`` line. ``timeout`` bounds the "queued" reply; the
        returned ``OriginateCall.outcome()`` waits for the final ``OriginateResponse``, by
        default up to the ring timeout plus ``outcome_margin_s``.
        """
        headers = self._originate_headers(
            channel,
            context=context,
            exten=exten,
            priority=priority,
            application=application,
            data=data,
            caller_id=caller_id,
            ring_timeout_ms=ring_timeout_ms,
            variables=variables,
            account=account,
            channel_id=channel_id,
        )

        # The outcome future exists before sending, because a fast failure can deliver
        # OriginateResponse before the queued reply is read.
        action_id = next(self._action_ids)
        outcome_future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._originates[action_id] = outcome_future
        try:
            result = await self._call("Originate", headers, timeout=timeout, action_id=action_id)
        except BaseException:
            self._forget_originate(action_id)
            raise

        log.info("ami_originate_queued", action_id=action_id)
        return OriginateCall(
            self,
            action_id,
            result.response,
            outcome_future,
            default_timeout_s=ring_timeout_ms / 1000 + outcome_margin_s,
        )

    async def queue_add(
        self,
        queue: str,
        interface: str,
        *,
        member_name: str | None = None,
        state_interface: str | None = None,
        penalty: int | None = None,
        paused: bool = True,
        reason: str | None = None,
        timeout: float | None = None,
    ) -> QueueMembership:
        """Add a queue member, by default already paused so no call rings it before it is ready.

        Returns ``ALREADY_MEMBER`` for Asterisk's "Already there" error.
        NOTE: Asterisk leaves an existing member's paused state unchanged in that case, so a
        caller that needs it paused must send QueuePause as well.
        """
        headers: list[tuple[str, str | int | bool]] = [
            ("Queue", queue),
            ("Interface", interface),
            ("Paused", paused),
        ]
        if member_name is not None:
            headers.append(("MemberName", member_name))
        if state_interface is not None:
            headers.append(("StateInterface", state_interface))
        if penalty is not None:
            headers.append(("Penalty", penalty))
        if reason is not None:
            headers.append(("Reason", reason))

        try:
            await self.action("QueueAdd", headers, timeout=timeout)
        except AmiActionError as exc:
            if is_already_there(exc):
                log.info("ami_queue_member_already_there", queue=queue, action_id=exc.response.action_id)
                return QueueMembership.ALREADY_MEMBER
            raise
        return QueueMembership.ADDED

    async def queue_remove(self, queue: str, interface: str, *, timeout: float | None = None) -> QueueMembership:
        """Remove a queue member; returns ``NOT_MEMBER`` for Asterisk's "Not there" error."""
        try:
            await self.action("QueueRemove", {"Queue": queue, "Interface": interface}, timeout=timeout)
        except AmiActionError as exc:
            if is_not_there(exc):
                return QueueMembership.NOT_MEMBER
            raise
        return QueueMembership.REMOVED

    def subscribe(self, handler: EventHandler, event_names: Iterable[str] | None = None) -> Subscription:
        """Register ``handler`` for events named in ``event_names`` (all events when None).

        Handlers run one event at a time in a single dispatcher task, never in the reader.
        A handler may be a plain function or a coroutine function. When handlers fall behind,
        the bounded queue drops new events and the drops are counted and logged.
        """
        names = None if event_names is None else frozenset(name.lower() for name in event_names)
        subscription = Subscription(self, handler, names)
        self._subscriptions.add(subscription)
        return subscription

    # ----- internals: sending ---------------------------------------------------------------

    async def _call(
        self,
        name: str,
        headers: HeadersArg,
        *,
        timeout: float | None,
        action_id: str | None = None,
    ) -> AmiActionResult:
        timeout_s = self._action_timeout_s if timeout is None else timeout
        action_id = action_id or next(self._action_ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        # Waiting for a session shares the action's time budget; nothing is sent meanwhile.
        await self.wait_ready(timeout=max(deadline - loop.time(), 0))
        session = self._session
        if session is None or session.is_closed:
            raise AmiNotConnected(f"AMI connection closed before action {name} was sent")

        try:
            async with asyncio.timeout_at(deadline):
                return await self._send_action(session, name, headers, action_id=action_id)
        except TimeoutError as exc:
            if isinstance(exc, AmiTimeout):
                raise
            raise AmiTimeout(
                f"AMI action {name} got no complete reply within {timeout_s} s",
                action=name,
                action_id=action_id,
                timeout_s=timeout_s,
            ) from None

    async def _send_action(
        self,
        session: _Session,
        name: str,
        headers: HeadersArg,
        *,
        action_id: str | None = None,
    ) -> AmiActionResult:
        action_id = action_id or next(self._action_ids)
        payload = encode_action(name, action_id, headers)
        if session.is_closed:
            raise AmiNotConnected(f"AMI connection closed before action {name} was sent")

        pending = _PendingAction(name, action_id, asyncio.get_running_loop().create_future())
        self._pending[action_id] = pending
        try:
            session.writer.write(payload)
            log.debug("ami_action_sent", action=name, action_id=action_id)
            try:
                await session.writer.drain()
            except ConnectionError as exc:
                self._close_session(session, f"write failed: {exc!r}")
            return await pending.future
        finally:
            self._pending.pop(action_id, None)

    @staticmethod
    def _originate_headers(
        channel: str,
        *,
        context: str | None,
        exten: str | None,
        priority: int,
        application: str | None,
        data: str | None,
        caller_id: str | None,
        ring_timeout_ms: int,
        variables: Mapping[str, str] | Iterable[tuple[str, str]],
        account: str | None,
        channel_id: str | None,
    ) -> list[tuple[str, str | int | bool]]:
        has_extension = context is not None and exten is not None
        if has_extension == (application is not None):
            raise ValueError("Originate needs either context and exten, or application, but not both")
        if ring_timeout_ms <= 0:
            raise ValueError(f"ring_timeout_ms must be positive, got {ring_timeout_ms}")

        headers: list[tuple[str, str | int | bool]] = [("Channel", channel)]
        if has_extension:
            assert context is not None and exten is not None
            headers += [("Context", context), ("Exten", exten), ("Priority", priority)]
        else:
            assert application is not None
            headers.append(("Application", application))
            if data is not None:
                headers.append(("Data", data))

        headers += [("Timeout", ring_timeout_ms), ("Async", True)]
        if caller_id is not None:
            headers.append(("CallerID", caller_id))
        if account is not None:
            headers.append(("Account", account))
        if channel_id is not None:
            headers.append(("ChannelId", channel_id))

        pairs: Iterable[tuple[str, str]] = variables.items() if isinstance(variables, Mapping) else variables
        for variable_name, value in pairs:
            if not variable_name or "=" in variable_name:
                raise ValueError(f"invalid Originate variable name {variable_name!r}")
            headers.append(("Variable", f"{variable_name}={value}"))
        return headers

    def _forget_originate(self, action_id: str) -> None:
        future = self._originates.pop(action_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def _log_off(self, session: _Session) -> None:
        try:
            async with asyncio.timeout(min(self._action_timeout_s, 2.0)):
                await self._send_action(session, "Logoff", None)
        except (AmiError, TimeoutError, OSError) as exc:
            log.debug("ami_logoff_failed", error=repr(exc))

    # ----- internals: session supervision -----------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                session = await self._open_session()
            except AmiAuthenticationError as exc:
                self._fatal_error = exc
                self._fail_in_flight(exc)
                self._closed.set()
                return
            except (OSError, TimeoutError, AmiProtocolError, AmiConnectionError, AmiActionError) as exc:
                failures += 1
                await self._wait_before_reconnect(failures, reason=repr(exc))
                continue

            failures = 0
            self._sessions += 1
            self._ready.set()
            log.info(
                "ami_session_ready",
                host=self.host,
                port=self.port,
                ami_version=session.framer.protocol_version,
                session=self._sessions,
            )
            if self._sessions > 1 and self._on_reconnected is not None:
                self._hook_task = asyncio.create_task(self._run_reconnect_hook(), name="ami-reconnected")

            try:
                # Shielded, so cancelling the supervisor does not mark the session as closed.
                reason = await asyncio.shield(session.closed)
            finally:
                await self._dispose_session(session)
                await self._cancel_reconnect_hook()

            if self._stopping:
                return
            log.warning("ami_connection_lost", host=self.host, port=self.port, reason=reason)
            failures = 1
            await self._wait_before_reconnect(failures, reason=reason)

    async def _wait_before_reconnect(self, failures: int, *, reason: str) -> None:
        delay_s = self._backoff.delay_s(failures)
        log.warning(
            "ami_reconnect_scheduled",
            host=self.host,
            port=self.port,
            attempt=failures,
            delay_s=round(delay_s, 3),
            reason=reason,
        )
        # A timer, not polling: stop() cancels the supervisor during this wait.
        await asyncio.sleep(delay_s)

    async def _open_session(self) -> _Session:
        async with asyncio.timeout(self._connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)

        loop = asyncio.get_running_loop()
        session = _Session(
            reader=reader,
            writer=writer,
            framer=AmiFramer(max_message_bytes=self._max_message_bytes),
            banner=loop.create_future(),
            booted=loop.create_future(),
            closed=loop.create_future(),
        )
        self._session = session
        session.tasks.append(asyncio.create_task(self._read_loop(session), name="ami-reader"))

        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await session.banner

            await self._log_in(session)

            async with asyncio.timeout(self._boot_timeout_s):
                await session.booted
        except BaseException:
            self._close_session(session, "session set-up failed")
            await self._dispose_session(session)
            raise

        session.tasks.append(asyncio.create_task(self._keep_alive(session), name="ami-keepalive"))
        return session

    async def _log_in(self, session: _Session) -> None:
        headers = {"Username": self.username, "Secret": self._secret, "Events": "on"}
        try:
            async with asyncio.timeout(self._action_timeout_s):
                await self._send_action(session, "Login", headers)
        except AmiActionError as exc:
            log.error(
                "ami_authentication_failed",
                host=self.host,
                port=self.port,
                username=self.username,
                asterisk_message=exc.message,
            )
            raise AmiAuthenticationError(
                f"AMI 登录被拒绝（{self.host}:{self.port}，用户名 {self.username}）："
                f"Asterisk 回复“{exc.message}”。请核对 manager.conf 中该用户的密码和 permit/deny "
                "设置与本系统配置的 AMI 账号是否一致，修正后重新启动服务。"
            ) from None

    async def _read_loop(self, session: _Session) -> None:
        try:
            while not session.is_closed:
                data = await session.reader.read(_READ_SIZE)
                if not data:
                    self._close_session(session, "Asterisk closed the connection")
                    return

                messages = session.framer.feed(data)
                if session.framer.banner is not None and not session.banner.done():
                    session.banner.set_result(session.framer.banner)

                for message in messages:
                    if session.is_closed:
                        break
                    self._route(session, message)
        except AmiProtocolError as exc:
            log.warning("ami_protocol_error", host=self.host, port=self.port, error=str(exc))
            self._close_session(session, f"protocol error: {exc}")
        except OSError as exc:
            self._close_session(session, f"read failed: {exc!r}")

    async def _keep_alive(self, session: _Session) -> None:
        while not session.is_closed:
            await asyncio.sleep(self._ping_interval_s)
            try:
                async with asyncio.timeout(self._action_timeout_s):
                    await self._send_action(session, "Ping", None)
            except TimeoutError:
                log.warning("ami_keepalive_timed_out", host=self.host, port=self.port, timeout_s=self._action_timeout_s)
                self._close_session(session, f"keepalive Ping got no reply within {self._action_timeout_s} s")
                return
            except (AmiConnectionError, AmiActionError):
                return

    async def _cancel_reconnect_hook(self) -> None:
        # A resync still running belongs to the lost session; the next session starts its own.
        task, self._hook_task = self._hook_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def _run_reconnect_hook(self) -> None:
        assert self._on_reconnected is not None
        try:
            await self._on_reconnected(self)
        except Exception:  # the hook is caller code; its failure must not stop the session
            log.exception("ami_reconnect_hook_failed", host=self.host, port=self.port)

    def _close_session(self, session: _Session, reason: str) -> None:
        if session.is_closed:
            return
        session.closed.set_result(reason)
        session.writer.close()
        if self._session is session:
            self._ready.clear()

        lost = AmiConnectionLost(f"AMI connection lost ({reason}); the action may or may not have run")
        _fail_future(session.banner, lost)
        _fail_future(session.booted, lost)
        self._fail_in_flight(lost)

    def _fail_in_flight(self, exc: Exception) -> None:
        pending_count = len(self._pending) + len(self._originates)
        for pending in list(self._pending.values()):
            _fail_future(pending.future, exc)
        self._pending.clear()
        for future in self._originates.values():
            _fail_future(future, exc)
        self._originates.clear()
        if pending_count:
            log.warning("ami_actions_failed", count=pending_count, error=str(exc))

    async def _dispose_session(self, session: _Session) -> None:
        self._close_session(session, "AMI client stopped")
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if session.tasks:
            await asyncio.wait(session.tasks)
        try:
            async with asyncio.timeout(1.0):
                await session.writer.wait_closed()
        except (OSError, TimeoutError):
            pass  # the socket is closed either way; the peer just did not finish cleanly
        if self._session is session:
            self._session = None

    # ----- internals: routing and events ----------------------------------------------------------

    def _route(self, session: _Session, message: AmiMessage) -> None:
        if message.kind == "response":
            self._route_response(message)
            return
        if message.kind != "event":
            log.warning("ami_unknown_message", first_header=message.headers[0][0] if message.headers else "")
            return

        action_id = message.action_id
        if action_id is not None:
            pending = self._pending.get(action_id)
            if pending is not None and pending.response is not None:
                self._collect_list_item(pending, message)
                return
            if message.is_event("OriginateResponse") and action_id in self._originates:
                future = self._originates.pop(action_id)
                if not future.done():
                    future.set_result(message)

        if message.is_event("FullyBooted") and not session.booted.done():
            session.booted.set_result(message)

        self._enqueue_event(message)

        if message.is_event("Shutdown"):
            log.info("ami_asterisk_shutdown", host=self.host, restart=message.get("Restart"))
            self._close_session(session, f"Asterisk shut down (Restart: {message.get('Restart')})")

    def _route_response(self, message: AmiMessage) -> None:
        action_id = message.action_id
        pending = self._pending.get(action_id) if action_id is not None else None
        if pending is None or pending.future.done():
            log.debug("ami_unmatched_response", action_id=action_id)
            return

        if message.name.lower() == "error":
            pending.future.set_exception(AmiActionError(pending.name, message))
            return
        if message.starts_event_list:
            pending.response = message
            return
        pending.future.set_result(AmiActionResult(response=message))

    def _collect_list_item(self, pending: _PendingAction, event: AmiMessage) -> None:
        if pending.future.done():
            return
        if not event.completes_event_list:
            pending.events.append(event)
            return
        assert pending.response is not None
        pending.future.set_result(
            AmiActionResult(response=pending.response, events=tuple(pending.events), completion=event)
        )

    def _enqueue_event(self, event: AmiMessage) -> None:
        self._events_received += 1
        try:
            self._events.put_nowait(event)
            return
        except asyncio.QueueFull:
            self._events_dropped += 1

        assert self._drop_counter is not None
        to_report = self._drop_counter.record("drop")
        if to_report is not None:
            log.warning(
                "ami_events_dropped",
                count=to_report,
                dropped_total=self._events_dropped,
                queue_size=self._events.maxsize,
                last_event=event.name,
            )

    async def _dispatch_events(self) -> None:
        while True:
            event = await self._events.get()
            self._events_dispatched += 1
            for subscription in list(self._subscriptions):
                if subscription.matches(event):
                    await self._call_handler(subscription.handler, event)

    async def _call_handler(self, handler: EventHandler, event: AmiMessage) -> None:
        try:
            result = handler(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # handler code is the caller's; one failure must not stop dispatch
            self._handler_failures += 1
            handler_name = getattr(handler, "__qualname__", repr(handler))
            assert self._failure_counter is not None
            to_report = self._failure_counter.record((handler_name, event.name, type(exc).__name__))
            if to_report is not None:
                log.error(
                    "ami_event_handler_failed",
                    handler=handler_name,
                    ami_event=event.name,
                    count=to_report,
                    exc_info=exc,
                )

    def _flush_rate_limited_logs(self) -> None:
        for counter, event_name in (
            (self._drop_counter, "ami_events_dropped"),
            (self._failure_counter, "ami_event_handler_failed"),
        ):
            if counter is None:
                continue
            for key, count in counter.drain().items():
                log.warning(event_name, key=str(key), count=count, final_summary=True)
