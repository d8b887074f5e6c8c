"""FastAGI adapter: accept Asterisk's FastAGI connections and run one routed handler per call.

``FastAgiServer`` listens on a loopback address and runs each connection in a task of its
own. The task reads the AGI environment under a timeout and a size cap and binds the call's
ids to the log context. It then looks the ``agi_network_script`` path up in an explicit
route table and awaits ``handler(env, channel)``. Each call ends with one "call finished"
log line carrying ``duration_ms`` and ``outcome``.

Failure destination: when no route matches, a handler fails with an AGI error or raises an
unexpected exception, the server sets the channel variable ``HOTLINE_FAILURE`` (``no_route``,
``agi_error`` or ``handler_error``) before it closes the connection. When a handler
returns normally on a channel that is still up, a server built with
``completion_variable=HOTLINE_DONE_VARIABLE`` sets ``HOTLINE_DONE=1`` instead.
Closing the connection ends the ``AGI()`` application with ``AGISTATUS`` SUCCESS in both
cases, and also when the controller process dies, so the dialplan sends a channel without
``HOTLINE_DONE`` to its fallback.

Dialplan settings for hang-up signalling (res_agi, Asterisk 22)::

    exten => 12349,1,Set(AGIEXITONHANGUP=yes)
     same => n,AGI(agi://127.0.0.1:4573/ivr/main?lang=zh)
     same => n,GotoIf($["${HOTLINE_FAILURE}" != ""]?failed,1)
     same => n,Hangup()

- ``AGISIGHUP`` unset (default ``yes``): Asterisk writes ``HANGUP`` when the caller hangs up
  and a second ``HANGUP`` when the AGI ends. The first marks the call ended. The
  second is never read, because the channel sends no command after the call ended.
- ``AGISIGHUP=no``: no notice is written. The hang-up then shows as a ``-1`` result, as
  ``511`` on the next media command, or as end of stream; each marks the call ended.
- ``AGIEXITONHANGUP=yes`` (recommended): Asterisk stops the AGI as soon as it sees the
  hang-up and closes the connection after any ``HANGUP`` lines, so a slow handler cannot hold
  a dead channel. The handler sees ``AgiHangup`` on its next read or write.

A second ``HANGUP`` or end of stream at any point is tolerated in all three settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final

import structlog

from hotline.privacy import mask_phone
from hwd_bridge.agi_channel import (
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_MAX_PROMPT_S,
    AgiChannel,
    EndReason,
)
from hwd_bridge.agi_protocol import DEFAULT_MAX_ENVIRONMENT_BYTES, AgiEnvironment, AgiEnvironmentParser
from hwd_bridge.errors import AgiEnvironmentIncomplete, AgiError, AgiHangup, AgiProtocolError
from ivr.call import CallerId
from ivr.ports import CallEnded, CallPortError

log = structlog.get_logger(__name__)

AgiHandler = Callable[[AgiEnvironment, AgiChannel], Awaitable[None]]

HOTLINE_FAILURE_VARIABLE: Final = "HOTLINE_FAILURE"
HOTLINE_DONE_VARIABLE: Final = "HOTLINE_DONE"

DEFAULT_HEADER_TIMEOUT_S: Final = 5.0
DEFAULT_CLOSE_TIMEOUT_S: Final = 2.0

# StreamReader line limit: the longest reply line (a long GET VARIABLE value) must fit.
DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024

_CALL_CONTEXT_KEYS: Final = ("call_id", "channel", "agi_script")


class FastAgiServer:
    """FastAGI server with an explicit route table from script path to async handler.

    Use ``async with FastAgiServer(routes) as server`` or ``start()``/``stop()``. ``port``
    gives the bound port once started, which matters when ``port=0`` picks a free one.
    """

    def __init__(
        self,
        routes: Mapping[str, AgiHandler],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        max_environment_bytes: int = DEFAULT_MAX_ENVIRONMENT_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        max_prompt_s: float = DEFAULT_MAX_PROMPT_S,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        completion_variable: str | None = None,
    ) -> None:
        self._routes = _validated_routes(routes)
        self._completion_variable = completion_variable
        self._host = host
        self._requested_port = port
        self._header_timeout_s = header_timeout_s
        self._max_environment_bytes = max_environment_bytes
        self._max_line_bytes = max_line_bytes
        self._command_timeout_s = command_timeout_s
        self._max_prompt_s = max_prompt_s
        self._close_timeout_s = close_timeout_s
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("FastAgiServer.port is only known after start()")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def live_calls(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FastAgiServer is already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._requested_port, limit=self._max_line_bytes
        )
        log.info("FastAGI server listening", host=self._host, port=self.port, routes=sorted(self._routes))

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening, wait up to ``grace_s`` for live calls, then cancel the rest."""
        server = self._server
        if server is None:
            return
        port = self.port
        self._stopping = True
        server.close()

        live = set(self._calls)
        cut = 0
        if live:
            _done, pending = await asyncio.wait(live, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            cut = len(pending)

        await server.wait_closed()
        self._server = None
        if cut:
            log.warning("FastAGI calls cancelled at shutdown", count=cut, grace_s=grace_s)
        log.info("FastAGI server stopped", port=port)

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- Per connection ---------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Runs synchronously when a connection is accepted, so the task is tracked before
        # stop() can look at the set.
        if self._stopping:
            writer.close()
            return
        task = asyncio.create_task(self._serve_connection(reader, writer), name="fastagi-call")
        self._calls.add(task)
        task.add_done_callback(self._on_call_done)

    def _on_call_done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # _serve_connection handles every handler error, so this is a bug in the server.
            log.error("FastAGI connection task failed", error=repr(error), exc_info=error)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _format_peer(writer.get_extra_info("peername"))
        try:
            # A missing or invalid environment was already logged with the peer address.
            env = await self._read_environment(reader, peer)
            if env is not None:
                await self._run_call(env, reader, writer, peer)
        finally:
            await self._close(writer)

    async def _run_call(
        self, env: AgiEnvironment, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        # Bind the call's ids for every log line of this task. The caller number is masked.
        started = time.monotonic()
        call_ids = {"call_id": env.uniqueid, "channel": env.channel, "agi_script": env.network_script}
        structlog.contextvars.bind_contextvars(**call_ids)
        call_log = log.bind(**call_ids)
        caller = CallerId.from_raw(env.callerid_raw)
        call_log.info("call started", peer=peer, caller=mask_phone(caller.number), caller_flags=sorted(caller.flags))

        channel = AgiChannel(
            reader,
            writer,
            call_id=env.uniqueid,
            command_timeout_s=self._command_timeout_s,
            max_prompt_s=self._max_prompt_s,
        )

        # Route, run the handler and map its outcome, then log the call once.
        outcome = "cancelled"
        try:
            outcome = await self._run_route(env, channel, call_log)
        finally:
            duration_ms = round((time.monotonic() - started) * 1000)
            finish = call_log.warning if outcome == "closed_before_first_reply" else call_log.info
            finish("call finished", outcome=outcome, duration_ms=duration_ms, end_reason=_end_reason(channel))
            structlog.contextvars.unbind_contextvars(*_CALL_CONTEXT_KEYS)

    async def _read_environment(self, reader: asyncio.StreamReader, peer: str) -> AgiEnvironment | None:
        parser = AgiEnvironmentParser(self._max_environment_bytes)
        try:
            async with asyncio.timeout(self._header_timeout_s):
                while True:
                    line = await reader.readline()
                    if not line:
                        raise AgiEnvironmentIncomplete(
                            "connection closed before the AGI environment ended",
                            bytes_received=parser.bytes_received,
                        )
                    env = parser.feed(line)
                    if env is not None:
                        return env
        except TimeoutError:
            log.warning(
                "AGI environment timed out",
                peer=peer,
                bytes_received=parser.bytes_received,
                timeout_s=self._header_timeout_s,
            )
        except AgiEnvironmentIncomplete as exc:
            log.warning("AGI environment incomplete", peer=peer, bytes_received=exc.bytes_received)
        except AgiProtocolError as exc:
            log.warning("AGI environment invalid", peer=peer, bytes_received=parser.bytes_received, error=str(exc))
        except ValueError as exc:
            # StreamReader raises ValueError for a line longer than its limit.
            log.warning("AGI environment invalid", peer=peer, bytes_received=parser.bytes_received, error=str(exc))
        except ConnectionError as exc:
            log.warning("AGI environment incomplete", peer=peer, bytes_received=parser.bytes_received, error=str(exc))
        return None

    async def _run_route(self, env: AgiEnvironment, channel: AgiChannel, call_log: Any) -> str:
        handler = self._routes.get(env.network_script) if env.network_script else None
        if handler is None:
            call_log.warning("no route for AGI script", known_routes=sorted(self._routes))
            await self._set_failure(channel, "no_route", call_log)
            return "no_route"

        try:
            await handler(env, channel)
        except (AgiHangup, CallEnded):
            return _hangup_outcome(channel)
        except (AgiError, CallPortError) as exc:
            call_log.warning("AGI call failed", error=str(exc), error_type=type(exc).__name__)
            await self._set_failure(channel, "agi_error", call_log)
            return "agi_error"
        except Exception:
            # This is the one place where a bug in a handler is logged. The call then goes
            # to the dialplan's failure destination.
            call_log.exception("AGI handler raised an unexpected exception")
            await self._set_failure(channel, "handler_error", call_log)
            return "handler_error"

        if channel.ended and channel.end_reason is not EndReason.LOCAL_HANGUP:
            return _hangup_outcome(channel)
        await self._mark_completed(channel, call_log)
        return "completed"

    async def _mark_completed(self, channel: AgiChannel, call_log: Any) -> None:
        """Set the completion variable on a channel that is still up after the handler finished.

        The dialplan cannot tell a handler that finished from a controller that died: both
        close the connection and leave ``AGISTATUS`` at SUCCESS. The variable tells them apart.
        """
        if self._completion_variable is None or not channel.usable:
            return
        try:
            await channel.set_variable(self._completion_variable, "1")
        except AgiError as exc:
            call_log.debug("completion variable not set", error=str(exc))

    async def _set_failure(self, channel: AgiChannel, reason: str, call_log: Any) -> None:
        if not channel.usable:
            call_log.debug("failure variable not set: channel unusable", reason=reason)
            return
        try:
            await channel.set_variable(HOTLINE_FAILURE_VARIABLE, reason)
        except AgiError as exc:
            call_log.debug("failure variable not set", reason=reason, error=str(exc))

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError):
            # The peer already reset or stopped reading, and the transport is closed either way.
            pass


def _validated_routes(routes: Mapping[str, AgiHandler]) -> dict[str, AgiHandler]:
    table: dict[str, AgiHandler] = {}
    for path, handler in routes.items():
        if not path or "?" in path or path != path.strip("/") or path != path.strip():
            raise ValueError(
                f"invalid FastAGI route {path!r}: use the script path without leading or "
                "trailing '/' and without a query, for example 'ivr/main'"
            )
        if not callable(handler):
            raise ValueError(f"FastAGI route {path!r} has a handler that is not callable: {handler!r}")
        table[path] = handler
    return table


def _hangup_outcome(channel: AgiChannel) -> str:
    # A connection that closed after its environment, with no reply and no HANGUP notice,
    # never became a call: Asterisk gave up on it or something else connected.
    closed_silently = channel.end_reason is EndReason.END_OF_STREAM and channel.replies_received == 0
    return "closed_before_first_reply" if closed_silently else "caller_hangup"


def _end_reason(channel: AgiChannel) -> str | None:
    reason = channel.end_reason
    return None if reason is None else reason.value


def _format_peer(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)
