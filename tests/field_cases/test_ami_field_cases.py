"""AMI field cases A01-A07 and client lifecycle, as byte exchanges with a fake AMI server on loopback.

The fake server writes the bytes Asterisk 22 writes (banner, responses, events) and parses the
client's actions with its own small parser, so these tests do not trust the client's framer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from hwd_bridge.ami_client import (
    AmiClient,
    OriginateResult,
    QueueMembership,
    ReconnectBackoff,
    is_already_there,
)
from hwd_bridge.ami_errors import (
    AmiActionError,
    AmiAuthenticationError,
    AmiClientClosed,
    AmiConnectionLost,
    AmiNotConnected,
    AmiTimeout,
)
from hwd_bridge.ami_protocol import AmiMessage

pytestmark = pytest.mark.timeout(30)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 12\r\nLastReload: 12\r\n"
    b"Status: Fully Booted\r\n\r\n"
)
SECRET = "s3cret-Value-XYZ"


# ----- fake AMI server --------------------------------------------------------------------------


class ReceivedAction:
    """One action the fake server read, as ordered (name, value) pairs."""

    def __init__(self, pairs: list[tuple[str, str]], raw: bytes, session: int) -> None:
        self.pairs = pairs
        self.raw = raw
        self.session = session

    def get(self, name: str) -> str | None:
        for key, value in self.pairs:
            if key.lower() == name.lower():
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key.lower() == name.lower()]

    @property
    def name(self) -> str:
        return self.get("Action") or ""

    @property
    def action_id(self) -> bytes:
        return (self.get("ActionID") or "").encode()


class FakePeer:
    """The server side of one AMI connection."""

    def __init__(self, server: FakeAmiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.session = server.connections

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_action(self) -> ReceivedAction | None:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        pairs = []
        for line in raw.decode("utf-8").split("\r\n"):
            if line:
                name, _, value = line.partition(": ")
                pairs.append((name, value))
        action = ReceivedAction(pairs, raw, self.session)
        self.server.actions.append(action)
        return action

    async def accept_login(self, *, send_booted: bool = True) -> ReceivedAction:
        await self.send(BANNER)
        login = await self.read_action()
        assert login is not None and login.name == "Login", "the first action must be Login"
        await self.send(
            b"Response: Success\r\nActionID: %s\r\nMessage: Authentication accepted\r\n\r\n" % login.action_id
        )
        self.server.logins += 1
        self.server.login_done.set()
        if send_booted:
            await self.send(FULLY_BOOTED)
        return login

    async def serve(self) -> None:
        """Answer Ping and Logoff; hand every other action to the test through the inbox."""
        while True:
            action = await self.read_action()
            if action is None:
                return
            if action.name == "Ping":
                self.server.pings += 1
                self.server.ping_seen.set()
                if self.server.answer_pings:
                    await self.send(
                        b"Response: Success\r\nActionID: %s\r\nPing: Pong\r\nTimestamp: 1700000000.000000\r\n\r\n"
                        % action.action_id
                    )
                continue
            if action.name == "Logoff":
                await self.send(
                    b"Response: Goodbye\r\nActionID: %s\r\nMessage: Thanks for all the fish.\r\n\r\n"
                    % action.action_id
                )
                return
            await self.server.inbox.put((self, action))

    def close(self) -> None:
        self.writer.close()


Script = Callable[[FakePeer], Awaitable[None]]


async def standard_session(peer: FakePeer) -> None:
    await peer.accept_login()
    await peer.serve()


class FakeAmiServer:
    """A loopback AMI server running ``script`` on every connection."""

    def __init__(self, script: Script = standard_session) -> None:
        self.script = script
        self.port = 0
        self.connections = 0
        self.logins = 0
        self.pings = 0
        self.answer_pings = True
        self.actions: list[ReceivedAction] = []
        self.inbox: asyncio.Queue[tuple[FakePeer, ReceivedAction]] = asyncio.Queue()
        self.login_done = asyncio.Event()
        self.ping_seen = asyncio.Event()
        self.peers: list[FakePeer] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close_listener(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def stop(self) -> None:
        if self._server is not None:
            await self.close_listener()
        for peer in self.peers:
            peer.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def expect_action(self, name: str, timeout: float = 5.0) -> tuple[FakePeer, ReceivedAction]:
        async with asyncio.timeout(timeout):
            peer, action = await self.inbox.get()
        assert action.name == name
        return peer, action

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = FakePeer(self, reader, writer)
        self.peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.script(peer)
        finally:
            writer.close()


@pytest.fixture
async def server() -> Any:
    fake = FakeAmiServer()
    await fake.start()
    yield fake
    await fake.stop()


def make_client(server: FakeAmiServer, **overrides: Any) -> AmiClient:
    options: dict[str, Any] = {
        "connect_timeout": 2.0,
        "action_timeout": 2.0,
        "boot_timeout": 5.0,
        "ping_interval": 30.0,
        "reconnect_min_delay": 0.05,
        "reconnect_max_delay": 0.4,
        "rng": random.Random(7),
    }
    options.update(overrides)
    return AmiClient("127.0.0.1", server.port, "hotline", SECRET, **options)


class EventCollector:
    """A subscriber that records events and lets a test wait for one by name."""

    def __init__(self) -> None:
        self.events: list[AmiMessage] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, event: AmiMessage) -> None:
        async with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    async def wait_for(self, name: str, timeout: float = 5.0) -> AmiMessage:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: any(e.is_event(name) for e in self.events))
        return next(e for e in self.events if e.is_event(name))


# ----- A01: single replies versus event lists -------------------------------------------------------


class TestEventLists:
    async def test_queue_add_single_reply(self, server: FakeAmiServer) -> None:
        """QueueAdd's plain Success reply completes at once and the next event is dispatched (A01)."""
        collector = EventCollector()
        async with make_client(server) as client:
            client.subscribe(collector, ["QueueMemberAdded"])
            task = asyncio.create_task(client.queue_add("support", "PJSIP/agent1", member_name="agent1"))

            peer, action = await server.expect_action("QueueAdd")
            await peer.send(
                b"Response: Success\r\nActionID: %s\r\nMessage: Added interface to queue\r\n\r\n"
                b"Event: QueueMemberAdded\r\nPrivilege: agent,all\r\nQueue: support\r\n"
                b"Interface: PJSIP/agent1\r\nPaused: 1\r\n\r\n" % action.action_id
            )

            assert await task == QueueMembership.ADDED
            assert action.get("Paused") == "true"
            assert action.get("Interface") == "PJSIP/agent1"
            event = await collector.wait_for("QueueMemberAdded")
            assert event.get("Queue") == "support"

    async def test_queue_add_already_there_is_idempotent(self, server: FakeAmiServer) -> None:
        """QueueAdd's 'Already there' error means the member exists; action() raises a testable error (A01)."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.queue_add("support", "PJSIP/agent1"))
            peer, action = await server.expect_action("QueueAdd")
            await peer.send(
                b"Response: Error\r\nActionID: %s\r\nMessage: Unable to add interface: Already there\r\n\r\n"
                % action.action_id
            )
            assert await task == QueueMembership.ALREADY_MEMBER

            raw_task = asyncio.create_task(client.action("QueueAdd", {"Queue": "support", "Interface": "PJSIP/agent1"}))
            peer, action = await server.expect_action("QueueAdd")
            await peer.send(
                b"Response: Error\r\nActionID: %s\r\nMessage: Unable to add interface: Already there\r\n\r\n"
                % action.action_id
            )
            with pytest.raises(AmiActionError) as caught:
                await raw_task
            assert is_already_there(caught.value)
            assert is_already_there(caught.value.response)

    async def test_queue_add_other_error_raises(self, server: FakeAmiServer) -> None:
        """Errors other than 'Already there' still raise from queue_add."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.queue_add("nosuch", "PJSIP/agent1"))
            peer, action = await server.expect_action("QueueAdd")
            await peer.send(
                b"Response: Error\r\nActionID: %s\r\nMessage: Unable to add interface to queue: No such queue\r\n\r\n"
                % action.action_id
            )

            with pytest.raises(AmiActionError, match="No such queue"):
                await task

    async def test_event_list_collected_until_complete(self, server: FakeAmiServer) -> None:
        """EventList: start collects items with the ActionID until ...Complete; others stay events (A01)."""
        collector = EventCollector()
        async with make_client(server) as client:
            client.subscribe(collector)
            task = asyncio.create_task(client.action("QueueStatus", {"Queue": "support"}))
            peer, action = await server.expect_action("QueueStatus")
            aid = action.action_id
            await peer.send(
                b"Response: Success\r\nActionID: %s\r\nEventList: start\r\nMessage: Queue status will follow\r\n\r\n"
                b"Event: QueueParams\r\nQueue: support\r\nMax: 0\r\nCalls: 0\r\nActionID: %s\r\n\r\n"
                b"Event: Newchannel\r\nChannel: PJSIP/caller-00000002\r\nUniqueid: 1700000000.50\r\n\r\n"
                b"Event: QueueMember\r\nQueue: support\r\nName: agent1\r\nStatus: 1\r\nActionID: %s\r\n\r\n"
                b"Event: QueueStatusComplete\r\nActionID: %s\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
                % (aid, aid, aid, aid)
            )

            result = await task
            assert result.is_list
            assert [e.name for e in result.events] == ["QueueParams", "QueueMember"]
            assert result.completion is not None
            assert result.completion.get("ListItems") == "2"
            newchannel = await collector.wait_for("Newchannel")
            assert newchannel.get("Uniqueid") == "1700000000.50"
            assert not any(e.is_event("QueueMember") for e in collector.events)

    async def test_follow_wording_without_eventlist_is_single(self, server: FakeAmiServer) -> None:
        """A reply that says 'will follow' but has no EventList header is not waited on as a list (A01)."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.action("SomeAction"))
            peer, action = await server.expect_action("SomeAction")
            await peer.send(
                b"Response: Success\r\nActionID: %s\r\nMessage: Channels will follow\r\n\r\n" % action.action_id
            )

            result = await task
            assert not result.is_list
            assert result.events == ()

    async def test_list_error_response_raises(self, server: FakeAmiServer) -> None:
        """A list action answered with Response: Error raises instead of waiting for items."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.action("PJSIPShowEndpoint", {"Endpoint": "nosuch"}))
            peer, action = await server.expect_action("PJSIPShowEndpoint")
            await peer.send(
                b"Response: Error\r\nActionID: %s\r\nMessage: Unable to retrieve endpoint nosuch\r\n\r\n"
                % action.action_id
            )

            with pytest.raises(AmiActionError, match="nosuch"):
                await task

    async def test_unanswered_action_times_out(self, server: FakeAmiServer) -> None:
        """An action with no reply raises AmiTimeout after its timeout, and the client stays usable (A01)."""
        async with make_client(server) as client:
            started = time.monotonic()
            with pytest.raises(AmiTimeout) as caught:
                await client.action("QueueAdd", {"Queue": "support", "Interface": "PJSIP/agent1"}, timeout=0.3)
            elapsed = time.monotonic() - started

            assert 0.25 < elapsed < 1.5
            assert caught.value.action == "QueueAdd"
            assert caught.value.action_id
            await client.action("Ping")

    async def test_unfinished_list_times_out(self, server: FakeAmiServer) -> None:
        """A list whose Complete event never arrives times out instead of hanging."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.action("CoreShowChannels", timeout=0.3))
            peer, action = await server.expect_action("CoreShowChannels")
            await peer.send(
                b"Response: Success\r\nActionID: %s\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
                % action.action_id
            )

            with pytest.raises(AmiTimeout):
                await task


# ----- A02: Originate ----------------------------------------------------------------------------------


def queued(action_id: bytes) -> bytes:
    return b"Response: Success\r\nActionID: %s\r\nMessage: Originate successfully queued\r\n\r\n" % action_id


def originate_response(action_id: bytes, response: bytes, reason: bytes, uniqueid: bytes = b"1700000000.60") -> bytes:
    return (
        b"Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: %s\r\nResponse: %s\r\n"
        b"Channel: PJSIP/agent1-00000003\r\nContext: outbound\r\nExten: 100\r\nApplication: \r\n"
        b"Data: \r\nReason: %s\r\nUniqueid: %s\r\nCallerIDNum: <unknown>\r\nCallerIDName: <unknown>\r\n\r\n"
        % (action_id, response, reason, uniqueid)
    )


class TestOriginate:
    async def test_async_header_and_separate_variables(self, server: FakeAmiServer) -> None:
        """Originate always sends Async: true and one Variable line per variable (A02)."""
        async with make_client(server) as client:
            task = asyncio.create_task(
                client.originate(
                    "PJSIP/agent1",
                    context="outbound",
                    exten="100",
                    variables={"TICKET_ID": "t-42", "NOTE": "a=b"},
                    ring_timeout_ms=20_000,
                )
            )
            peer, action = await server.expect_action("Originate")
            await peer.send(queued(action.action_id))
            call = await task

            assert action.get("Async") == "true"
            assert action.get_all("Variable") == ["TICKET_ID=t-42", "NOTE=a=b"]
            assert action.raw.count(b"\r\nVariable: ") == 2
            assert action.get("Timeout") == "20000"
            assert call.queued_response.get("Message") == "Originate successfully queued"

    @pytest.mark.parametrize(
        ("response", "reason", "expected"),
        [
            (b"Success", b"4", OriginateResult.ANSWERED),
            (b"Failure", b"3", OriginateResult.NO_ANSWER),
            (b"Failure", b"5", OriginateResult.BUSY),
            (b"Failure", b"8", OriginateResult.CONGESTION),
            (b"Failure", b"0", OriginateResult.FAILED),
            (b"Failure", b"1", OriginateResult.FAILED),
        ],
    )
    async def test_outcome_reason_mapped(
        self, server: FakeAmiServer, response: bytes, reason: bytes, expected: OriginateResult
    ) -> None:
        """Queued and final outcome resolve separately; Reason maps to an OriginateResult (A02)."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.originate("PJSIP/agent1", context="outbound", exten="100"))
            peer, action = await server.expect_action("Originate")
            await peer.send(queued(action.action_id))
            call = await task

            await peer.send(originate_response(action.action_id, response, reason))
            outcome = await call.outcome(timeout=2)

            assert outcome.result is expected
            assert outcome.reason_code == int(reason)
            assert outcome.uniqueid == "1700000000.60"

    async def test_concurrent_originates_interleave(self, server: FakeAmiServer) -> None:
        """Two Originates with interleaved replies each get their own outcome, by ActionID (A02)."""
        async with make_client(server) as client:
            first_task = asyncio.create_task(client.originate("PJSIP/agent1", context="outbound", exten="100"))
            second_task = asyncio.create_task(client.originate("PJSIP/agent2", context="outbound", exten="100"))
            peer, first = await server.expect_action("Originate")
            _, second = await server.expect_action("Originate")
            assert first.action_id != second.action_id

            await peer.send(
                queued(second.action_id)
                + originate_response(second.action_id, b"Failure", b"5", b"1700000000.62")
                + queued(first.action_id)
                + originate_response(first.action_id, b"Success", b"4", b"1700000000.61")
            )
            first_call, second_call = await first_task, await second_task

            first_outcome = await first_call.outcome(timeout=2)
            second_outcome = await second_call.outcome(timeout=2)
            assert {first_call.action_id, second_call.action_id} == {
                first.action_id.decode(),
                second.action_id.decode(),
            }
            by_channel = {
                first.get("Channel"): first_outcome.result,
                second.get("Channel"): second_outcome.result,
            }
            assert by_channel["PJSIP/agent1"] is OriginateResult.ANSWERED
            assert by_channel["PJSIP/agent2"] is OriginateResult.BUSY

    async def test_outcome_before_queued_reply(self, server: FakeAmiServer) -> None:
        """An OriginateResponse read before the queued reply is still matched to its call."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.originate("PJSIP/nosuch", context="outbound", exten="100"))
            peer, action = await server.expect_action("Originate")
            await peer.send(originate_response(action.action_id, b"Failure", b"0") + queued(action.action_id))

            call = await task
            outcome = await call.outcome(timeout=2)
            assert outcome.result is OriginateResult.FAILED

    async def test_reply_without_message_header(self, server: FakeAmiServer) -> None:
        """A Success reply with no Message header still counts as queued (no KeyError) (A02)."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.originate("PJSIP/agent1", application="Playback", data="hello"))
            peer, action = await server.expect_action("Originate")
            await peer.send(b"Response: Success\r\nActionID: %s\r\n\r\n" % action.action_id)

            call = await task
            assert action.get("Application") == "Playback"
            assert action.get("Async") == "true"
            assert call.queued_response.get("Message") is None

    async def test_outcome_times_out(self, server: FakeAmiServer) -> None:
        """A missing OriginateResponse raises AmiTimeout from outcome() (A02)."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.originate("PJSIP/agent1", context="outbound", exten="100"))
            peer, action = await server.expect_action("Originate")
            await peer.send(queued(action.action_id))
            call = await task

            with pytest.raises(AmiTimeout, match="OriginateResponse"):
                await call.outcome(timeout=0.2)

            # A late event for a forgotten Originate is an ordinary event, not a crash.
            await peer.send(originate_response(action.action_id, b"Success", b"4"))
            await client.action("Ping")

    async def test_queued_reply_times_out(self, server: FakeAmiServer) -> None:
        """A missing queued reply raises AmiTimeout from originate() (A02)."""
        async with make_client(server) as client:
            with pytest.raises(AmiTimeout):
                await client.originate("PJSIP/agent1", context="outbound", exten="100", timeout=0.2)

    async def test_rejected_originate_raises(self, server: FakeAmiServer) -> None:
        """Response: Error to an Originate raises AmiActionError."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.originate("Bogus/agent1", context="outbound", exten="100"))
            peer, action = await server.expect_action("Originate")
            await peer.send(b"Response: Error\r\nActionID: %s\r\nMessage: Originate failed\r\n\r\n" % action.action_id)

            with pytest.raises(AmiActionError, match="Originate failed"):
                await task

    async def test_generic_originate_rejected(self, server: FakeAmiServer) -> None:
        """action('Originate') is refused so no Originate can be sent without Async."""
        async with make_client(server) as client:
            with pytest.raises(ValueError, match="originate"):
                await client.action("Originate", {"Channel": "PJSIP/agent1"})


# ----- A03 and A04: framing on the wire ---------------------------------------------------------------------


class TestWireFraming:
    async def test_crlf_lf_terminator_keeps_next_event(self, server: FakeAmiServer) -> None:
        """An event ended by CRLF + LF does not swallow the Hangup after it (A03)."""
        collector = EventCollector()
        async with make_client(server) as client:
            client.subscribe(collector)
            peer = server.peers[0]
            await peer.send(
                b"Event: CoreShowChannelMapComplete\r\nActionID: x\r\nListItems: 1\r\n\n"
                b"Event: Hangup\r\nChannel: PJSIP/agent1-00000001\r\nUniqueid: 1700000000.42\r\n\r\n"
            )

            hangup = await collector.wait_for("Hangup")
            assert hangup.get("Uniqueid") == "1700000000.42"
            assert any(e.is_event("CoreShowChannelMapComplete") for e in collector.events)

    async def test_utf8_character_split_across_tcp_writes(self, server: FakeAmiServer) -> None:
        """张 split after its first byte over two TCP writes still decodes as 张三 (A04)."""
        collector = EventCollector()
        async with make_client(server) as client:
            client.subscribe(collector, ["Newchannel"])
            peer = server.peers[0]
            data = (
                "Event: Newchannel\r\nChannel: PJSIP/caller-00000004\r\nCallerIDName: 张三\r\n"
                "Uniqueid: 1700000000.70\r\n\r\n"
            ).encode()
            split_at = data.index("张".encode()) + 1

            with capture_logs() as logs:
                await peer.send(data[:split_at])
                # The pause makes the client read the first part on its own before the rest arrives.
                await asyncio.sleep(0.05)
                await peer.send(data[split_at:])
                event = await collector.wait_for("Newchannel")

            assert event.get("CallerIDName") == "张三"
            assert not [entry for entry in logs if entry["event"] == "ami_invalid_utf8_replaced"]

    async def test_invalid_utf8_replaced_once(self, server: FakeAmiServer) -> None:
        """Invalid UTF-8 becomes U+FFFD with exactly one warning for the message (A04)."""
        collector = EventCollector()
        async with make_client(server) as client:
            client.subscribe(collector, ["Newchannel"])
            peer = server.peers[0]

            with capture_logs() as logs:
                await peer.send(
                    b"Event: Newchannel\r\nCallerIDName: \xe5\xbc\xa0\xff\r\nConnectedLineName: \xc3\r\n\r\n"
                )
                event = await collector.wait_for("Newchannel")

            assert event.get("CallerIDName") == "张\ufffd"
            assert event.get("ConnectedLineName") == "\ufffd"
            warnings = [entry for entry in logs if entry["event"] == "ami_invalid_utf8_replaced"]
            assert len(warnings) == 1


# ----- A05: Asterisk restarts ----------------------------------------------------------------------------------


class TestReconnect:
    async def test_restart_reconnects_with_backoff_and_resync(self) -> None:
        """Shutdown, refusal, new banner: backoff, re-login, FullyBooted wait, hook, no re-sent Originate (A05)."""
        boot_gate = asyncio.Event()

        async def restarted_session(peer: FakePeer) -> None:
            await peer.accept_login(send_booted=False)
            await boot_gate.wait()
            await peer.send(FULLY_BOOTED)
            await peer.serve()

        server = FakeAmiServer()
        await server.start()
        hook_calls: list[bool] = []
        hook_ran = asyncio.Event()

        async def on_reconnected(client: AmiClient) -> None:
            hook_calls.append(client.is_ready)
            hook_ran.set()

        client = make_client(server, on_reconnected=on_reconnected)
        try:
            with capture_logs() as logs:
                await client.start()
                originate_task = asyncio.create_task(
                    client.originate("PJSIP/agent1", context="outbound", exten="100")
                )
                peer, _ = await server.expect_action("Originate")

                # Asterisk announces the restart, drops the connection and refuses new ones.
                await server.close_listener()
                await peer.send(b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: True\r\n\r\n")
                peer.close()
                with pytest.raises(AmiConnectionLost):
                    await originate_task
                assert not client.is_ready

                # An action issued while disconnected waits for the next session instead of failing.
                status_task = asyncio.create_task(client.action("QueueStatus", timeout=10))
                await asyncio.sleep(0.6)  # the restart window during which connections are refused

                server.script = restarted_session
                server.login_done.clear()
                await server.start()
                async with asyncio.timeout(5):
                    await server.login_done.wait()
                assert not client.is_ready
                assert not hook_ran.is_set()
                assert not status_task.done()

                boot_gate.set()
                async with asyncio.timeout(5):
                    await hook_ran.wait()
                peer2, status = await server.expect_action("QueueStatus")
                await peer2.send(b"Response: Success\r\nActionID: %s\r\n\r\n" % status.action_id)
                await status_task
        finally:
            await client.stop()
            await server.stop()

        assert hook_calls == [True]
        assert client.stats.sessions == 2
        second_session = [a.name for a in server.actions if a.session == 2]
        assert second_session[0] == "Login"
        assert "Originate" not in second_session
        assert [a.name for a in server.actions].count("Originate") == 1

        scheduled = [entry for entry in logs if entry["event"] == "ami_reconnect_scheduled"]
        assert 2 <= len(scheduled) <= 8
        backoff = ReconnectBackoff(0.05, 0.4)
        for entry in scheduled:
            cap = backoff.cap_s(entry["attempt"])
            assert cap / 2 - 0.001 <= entry["delay_s"] <= cap + 0.001
        attempts = [entry["attempt"] for entry in scheduled]
        assert attempts == list(range(1, len(attempts) + 1))
        assert any(entry["event"] == "ami_asterisk_shutdown" for entry in logs)

    def test_backoff_grows_and_is_capped(self) -> None:
        """Delays double per failure up to the maximum, with jitter in [cap/2, cap]."""
        backoff = ReconnectBackoff(0.5, 30.0, random.Random(1))

        caps = [backoff.cap_s(n) for n in range(1, 10)]
        assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
        delays = [backoff.delay_s(3) for _ in range(200)]
        assert all(1.0 <= d <= 2.0 for d in delays)
        assert max(delays) - min(delays) > 0.5

    async def test_keepalive_timeout_reconnects(self, server: FakeAmiServer) -> None:
        """A Ping without a reply closes the silent connection and a new session is opened (A05)."""
        client = make_client(server, ping_interval=0.1, action_timeout=0.2)
        server.answer_pings = False
        await client.start()
        try:
            async with asyncio.timeout(5):
                while server.logins < 2:
                    server.login_done.clear()
                    await server.login_done.wait()
            server.answer_pings = True
            await client.wait_ready(timeout=5)
            assert server.pings >= 1
        finally:
            await client.stop()

    async def test_oversized_message_reconnects(self, server: FakeAmiServer) -> None:
        """A message over max_message_bytes drops the session and the client reconnects."""
        client = make_client(server, max_message_bytes=4096)
        await client.start()
        try:
            server.login_done.clear()
            await server.peers[0].send(b"Event: Junk\r\nData: " + b"x" * 8192)
            async with asyncio.timeout(5):
                await server.login_done.wait()
            await client.wait_ready(timeout=5)
            assert server.connections == 2
        finally:
            await client.stop()


# ----- A06: wrong credentials ---------------------------------------------------------------------------------


class TestAuthentication:
    @pytest.mark.parametrize("close_after_error", [True, False])
    async def test_wrong_secret_is_fatal_and_not_retried(self, close_after_error: bool) -> None:
        """Authentication failed raises a typed error once, with no retry and no secret in logs (A06)."""

        async def reject_login(peer: FakePeer) -> None:
            await peer.send(BANNER)
            login = await peer.read_action()
            assert login is not None
            await peer.send(
                b"Response: Error\r\nActionID: %s\r\nMessage: Authentication failed\r\n\r\n" % login.action_id
            )
            if not close_after_error:
                await peer.read_action()

        server = FakeAmiServer(reject_login)
        await server.start()
        client = make_client(server)
        try:
            with capture_logs() as logs:
                with pytest.raises(AmiAuthenticationError) as caught:
                    await client.start()

                with pytest.raises(AmiAuthenticationError):
                    await client.action("Ping")
        finally:
            await client.stop()
            await server.stop()

        assert server.connections == 1
        assert [a.name for a in server.actions] == ["Login"]
        assert server.actions[0].get("Secret") == SECRET
        assert "登录被拒绝" in str(caught.value)
        assert "Authentication failed" in str(caught.value)
        assert SECRET not in str(caught.value)
        assert SECRET not in repr(logs)
        assert not [entry for entry in logs if entry["event"] == "ami_reconnect_scheduled"]
        assert client.fatal_error is caught.value


# ----- A07: event floods and failing handlers -------------------------------------------------------------


class TestEventDispatch:
    async def test_flood_with_slow_handler(self, server: FakeAmiServer) -> None:
        """20,000 events in about 2 s with a 50 ms handler: reader keeps up, drops counted, no disconnect (A07)."""
        handled: list[str] = []

        async def slow_handler(event: AmiMessage) -> None:
            handled.append(event.name)
            await asyncio.sleep(0.05)

        client = make_client(server, event_queue_size=100, action_timeout=2.0)
        client.subscribe(slow_handler, ["VarSet"])
        with capture_logs() as logs:
            await client.start()
            try:
                peer = server.peers[0]
                event = (
                    b"Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/agent1-00000001\r\n"
                    b"Uniqueid: 1700000000.42\r\nVariable: QUEUE_POS\r\nValue: 1\r\n\r\n"
                )
                started = time.monotonic()
                for _ in range(40):
                    await peer.send(event * 500)
                    await asyncio.sleep(0.05)  # paces the flood at about 10,000 events per second

                ping_started = time.monotonic()
                await client.action("Ping")
                ping_s = time.monotonic() - ping_started
                flood_s = time.monotonic() - started
                stats = client.stats
            finally:
                await client.stop()

        # FullyBooted plus the 20,000 VarSet events were all read before the Ping reply.
        assert stats.events_received == 20_001
        assert stats.events_dropped > 10_000
        assert stats.events_dispatched + stats.events_dropped <= stats.events_received
        assert stats.sessions == 1
        assert server.connections == 1
        assert ping_s < 1.0
        assert flood_s < 6.0
        assert 0 < len(handled) < 200
        drop_logs = [entry for entry in logs if entry["event"] == "ami_events_dropped"]
        assert 1 <= len(drop_logs) <= 3

    async def test_failing_handler_logged_with_event_type(self, server: FakeAmiServer) -> None:
        """A KeyError in a handler is logged with the event type and dispatch goes on (A07)."""
        causes: list[str] = []
        collector = EventCollector()

        def needs_cause(event: AmiMessage) -> None:
            fields = dict(event.headers)
            causes.append(fields["Cause"])

        async with make_client(server) as client:
            client.subscribe(needs_cause, ["Hangup"])
            client.subscribe(collector, ["Hangup"])
            peer = server.peers[0]

            with capture_logs() as logs:
                await peer.send(
                    b"Event: Hangup\r\nUniqueid: 1700000000.1\r\n\r\n" * 3
                    + b"Event: Hangup\r\nUniqueid: 1700000000.2\r\nCause: 16\r\n\r\n"
                )
                async with asyncio.timeout(5), collector._arrived:
                    await collector._arrived.wait_for(lambda: len(collector.events) == 4)
                await client.action("Ping")

            assert causes == ["16"]
            assert client.stats.handler_failures == 3
            failures = [entry for entry in logs if entry["event"] == "ami_event_handler_failed"]
            assert len(failures) == 1
            assert failures[0]["ami_event"] == "Hangup"
            assert failures[0]["handler"].endswith("needs_cause")
            assert isinstance(failures[0]["exc_info"], KeyError)


# ----- lifecycle ----------------------------------------------------------------------------------------------


class TestLifecycle:
    async def test_login_first_and_unique_action_ids(self, server: FakeAmiServer) -> None:
        """Login is the first action, and 50 concurrent actions get 50 distinct ActionIDs."""
        async with make_client(server) as client:
            await asyncio.gather(*(client.action("Ping") for _ in range(50)))

        names = [a.name for a in server.actions]
        assert names[0] == "Login"
        assert server.actions[0].get("Username") == "hotline"
        action_ids = [a.get("ActionID") for a in server.actions]
        assert len(set(action_ids)) == len(action_ids)
        assert names.count("Ping") == 50

    async def test_keepalive_ping(self, server: FakeAmiServer) -> None:
        """The client pings Asterisk on its own every ping_interval."""
        async with make_client(server, ping_interval=0.1):
            async with asyncio.timeout(2):
                await server.ping_seen.wait()

    async def test_stop_logs_off_and_rejects_actions(self, server: FakeAmiServer) -> None:
        """stop() sends Logoff, and actions after stop raise AmiClientClosed."""
        client = make_client(server)
        await client.start()
        await client.stop()
        await client.stop()

        assert server.actions[-1].name == "Logoff"
        with pytest.raises(AmiClientClosed):
            await client.action("Ping")

    async def test_action_while_disconnected_is_not_sent(self, server: FakeAmiServer) -> None:
        """With no session, an action fails with AmiNotConnected after its timeout and is never sent."""
        collector = EventCollector()
        async with make_client(server) as client:
            client.subscribe(collector, ["Shutdown"])
            await server.close_listener()
            await server.peers[0].send(b"Event: Shutdown\r\nShutdown: Cleanly\r\nRestart: False\r\n\r\n")
            server.peers[0].close()
            await collector.wait_for("Shutdown")
            assert not client.is_ready

            with pytest.raises(AmiNotConnected):
                await client.action("QueueStatus", timeout=0.3)

        assert "QueueStatus" not in [a.name for a in server.actions]

    async def test_pending_action_fails_on_connection_loss(self, server: FakeAmiServer) -> None:
        """An action in flight when the connection drops raises AmiConnectionLost at once."""
        async with make_client(server) as client:
            task = asyncio.create_task(client.action("QueueStatus", timeout=10))
            peer, _ = await server.expect_action("QueueStatus")
            started = time.monotonic()
            peer.close()

            with pytest.raises(AmiConnectionLost):
                await task
            assert time.monotonic() - started < 1.0
