"""Domain: runs one call through a flow, node by node, over a ``CallPort``.

The runner uses no Asterisk or SQLite code. It asks the ``AgentPool`` for agents,
tells ``CallHooks`` when the caller picks a category or reaches an agent (the
controller opens tickets there), and returns a ``CallSession`` that records the path,
the keys, the agent and how the call ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from acd.pool import AgentPool, ReleaseOutcome, Reservation
from acd.queue_estimate import HandleTimes, QueueEstimate, estimate_queue
from ivr.call import Call
from ivr.overflow import HandoffError, OverflowHandoff, handoff_from_args
from ivr.entry import normalize_id_number, valid_id_number, valid_phone
from ivr.flow import (
    DEFAULT_SKILL,
    BranchCondition,
    BranchNode,
    CallbackNode,
    CollectNode,
    EmergencyOverflow,
    Flow,
    HangupNode,
    Listen,
    MenuNode,
    PlayNode,
    QueueCallback,
    QueueNode,
    ReadBack,
    RecordNode,
    SetNode,
    SurveyNode,
    TransferNode,
)
from ivr.ports import (
    CallEnded,
    CallPort,
    CallPortError,
    DialResult,
    DialStatus,
    DigitInput,
    DigitOutcome,
    CallerDirectory,
    CallerProfile,
    WorkCalendar,
)
from ivr.recognizer import AnswerRecorder, RecognizerError, SpeechRecognizer, choice_for
from ivr.spoken_numbers import (
    callers_ahead_fragments,
    digits_fragments,
    queue_position_fragments,
    wait_minutes_fragments,
)
from tickets.call_record import CallOutcome

log = structlog.get_logger(__name__)

# A call that visits this many nodes is in a loop. The validator rejects loops made only
# of play nodes, and this bound catches the rest.
MAX_NODE_VISITS = 200


# Office hours and working days are judged in the hotline's own time zone.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")

CONFIRM_KEY = "1"
RETRY_KEY = "2"
SURVEY_KEYS = frozenset("12345")

# While hold music plays, the runner listens for the queue's callback key in slices of this
# length. A slice in progress delays the dial to a newly free agent by at most this much,
# because AGI runs one command at a time.
QUEUE_KEY_POLL_MS = 500


class WeekdayCalendar:
    """Treats Monday to Friday as working days.

    NOTE: this ignores public holidays and the weekend days the State Council makes
    working days (调休); pass a real ``WorkCalendar`` to ``FlowRunner`` for those.
    """

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5


@dataclass(frozen=True, slots=True)
class InputProfile:
    """Input settings for one caller, merged from the flow's profiles of the caller's need tags."""

    timeout_factor: float = 1.0
    extra_attempts: int = 0
    rendition: str | None = None
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """A queued caller's place, kept after they chose a callback and hung up.

    ``waiting_since`` is the runner's monotonic clock when the call first asked for an
    agent; the ACD pool serves the callback as a call that arrived then.
    """

    skill: str
    waiting_since: float
    priority: int
    needs: frozenset[str]
    preferred_agent: str | None


@dataclass(frozen=True, slots=True)
class KeyPress:
    """Input to one menu prompt: the node, the keys pressed and how the input ended."""

    node: str
    digits: str
    outcome: str
    at_ms: int


@dataclass(slots=True)
class CallSession:
    """Record of one call so far, filled in by the runner as the call goes."""

    call: Call
    flow_id: str
    flow_version: str
    path: list[str] = field(default_factory=list)
    keys: list[KeyPress] = field(default_factory=list)
    category: str | None = None
    skill: str | None = None
    agent_id: str | None = None
    outcome: CallOutcome | None = None
    queue_entered_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    talk_seconds: float = 0.0
    ticket_id: str | None = None
    prompt_failures: list[str] = field(default_factory=list)
    needs: set[str] = field(default_factory=set)
    priority: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    # Digits the caller typed in collect nodes, by field name. They may be an ID number:
    # never log them.
    # NOTE: nothing stores them yet; an ID number needs encrypted storage first.
    collected: dict[str, str] = field(default_factory=dict)
    emergency: bool = False
    emergency_need: str | None = None
    recording_file: str | None = None
    recording_seconds: float = 0.0
    callback_number: str | None = None
    callback_is_caller_number: bool = False
    survey_score: int | None = None
    transferred_to: str | None = None
    # The caller's citizen profile when the number matched exactly one; never logged.
    caller_profile: CallerProfile | None = None
    # Agent the ACD keeps the call for during its preferred wait (the open ticket's agent,
    # else the profile's preferred agent).
    preferred_agent: str | None = None
    # Set when the caller chose a callback in the queue; the controller keeps the place.
    queue_place: QueuePlace | None = None
    # The switch's file of the recorded agent conversation (MixMonitor), relative to the
    # switch's monitor folder (astspooldir/monitor).
    call_recording_file: str | None = None
    # What a lower tier sent with a call it overflowed to this node: its ticket id, the
    # caller's need tags and the priority.
    handoff: OverflowHandoff | None = None
    # Set when this call overflowed to the tier above: "trunk" (dialled through the trunk
    # between the tiers) or "callback" (ticket escalated with a callback request).
    overflow_via: str | None = None
    overflow_tier: str | None = None
    overflow_waited_s: float = 0.0

    @property
    def last_node(self) -> str | None:
        return self.path[-1] if self.path else None


def _release_outcome(result: DialResult) -> ReleaseOutcome:
    if result.answered:
        return ReleaseOutcome.ANSWERED
    if result.status is DialStatus.NO_ANSWER:
        return ReleaseOutcome.NO_ANSWER
    return ReleaseOutcome.ABANDONED


class CallHooks(Protocol):
    """Business events the controller acts on while a call runs."""

    async def category_chosen(self, session: CallSession) -> None: ...

    async def agent_answered(self, session: CallSession) -> None: ...

    async def emergency_raised(self, session: CallSession) -> None: ...

    async def message_recorded(self, session: CallSession) -> None: ...

    async def callback_requested(self, session: CallSession) -> None: ...

    async def survey_answered(self, session: CallSession) -> None: ...

    async def overflow_dialling(self, session: CallSession) -> None:
        """An emergency call is about to be dialled to the tier above; its ticket must exist now."""
        ...

    async def overflow_escalated(self, session: CallSession) -> bool:
        """Escalate the emergency call's ticket to the tier above as a callback request.

        Returns False when the escalation could not be written. The caller then hears no
        promise of a callback from the tier above.
        """
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class _FlowLooped(Exception):
    pass


class _CallbackChosen:
    """Marker returned while waiting in the queue when the caller chose a callback."""


_CALLBACK_CHOSEN = _CallbackChosen()


class FlowRunner:
    """Runs calls through flows; one instance serves every call of a node."""

    def __init__(
        self,
        pool: AgentPool,
        hooks: CallHooks,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
        calendar: WorkCalendar | None = None,
        callers: CallerDirectory | None = None,
        recognizer: SpeechRecognizer | None = None,
        answer_path: Callable[[str], Path] = Path,
        handle_times: HandleTimes | None = None,
    ):
        """``recognizer`` hears spoken menu answers on menus with ``listen``; without it
        menus accept keys only. ``answer_path`` maps the file name the switch reports for
        a recorded answer to the path the recogniser reads."""
        self._recognizer = recognizer
        self._answer_path = answer_path
        self._pool = pool
        self._hooks = hooks
        self._clock = clock
        self._wall_clock = wall_clock
        self._calendar = calendar if calendar is not None else WeekdayCalendar()
        self._callers = callers
        # Recent handle times per skill, for the expected wait a queued caller hears.
        self.handle_times = handle_times if handle_times is not None else HandleTimes()

    async def run(self, flow: Flow, call: Call, port: CallPort) -> CallSession:
        """Run ``call`` from the flow's start node until it hangs up or the flow ends."""
        session = CallSession(call=call, flow_id=flow.flow_id, flow_version=flow.version)
        started = self._clock()
        bound = structlog.contextvars.bind_contextvars(flow=flow.flow_id, flow_version=flow.version[:12])

        try:
            await port.answer()
            node_id: str | None = await self._start_node(flow, session)
            visits = 0
            duration_reached = False
            max_duration = flow.handlers.max_duration
            while node_id is not None:
                visits += 1
                if visits > MAX_NODE_VISITS:
                    raise _FlowLooped(node_id)
                if max_duration and not duration_reached and self._clock() - started >= max_duration.seconds:
                    duration_reached = True
                    log.info("maximum call duration reached", call_id=call.call_id, node=node_id,
                             limit_s=max_duration.seconds, target=max_duration.next)
                    node_id = max_duration.next
                session.path.append(node_id)
                node_id = await self._run_node(flow, node_id, session, port, started)

        except CallEnded:
            if session.outcome is None:
                in_queue = session.queue_entered_at is not None
                session.outcome = CallOutcome.ABANDONED_IN_QUEUE if in_queue else CallOutcome.ABANDONED_IN_MENU
            log.info("caller hung up", call_id=call.call_id, node=session.last_node, outcome=session.outcome.value)

        except CallPortError as exc:
            session.outcome = CallOutcome.FAILED
            log.warning("call failed on the switch", call_id=call.call_id, node=session.last_node, error=str(exc))

        except _FlowLooped as exc:
            session.outcome = CallOutcome.FAILED
            log.error("flow visited too many nodes", call_id=call.call_id, node=str(exc), limit=MAX_NODE_VISITS)

        finally:
            session.ended_at = self._wall_clock()
            structlog.contextvars.unbind_contextvars(*bound)

        return session

    async def _run_node(
        self, flow: Flow, node_id: str, session: CallSession, port: CallPort, started: float
    ) -> str | None:
        node = flow.node(node_id)

        if isinstance(node, PlayNode):
            await self._play(flow, node.prompt, session, port)
            return node.next

        if isinstance(node, MenuNode):
            return await self._run_menu(flow, node_id, node, session, port, started)

        if isinstance(node, CollectNode):
            return await self._run_collect(flow, node_id, node, session, port, started)

        if isinstance(node, SetNode):
            return await self._run_set(node_id, node, session)

        if isinstance(node, BranchNode):
            return self._run_branch(node_id, node, session)

        if isinstance(node, QueueNode):
            return await self._run_queue(flow, node, session, port)

        if isinstance(node, TransferNode):
            return await self._run_transfer(flow, node, session, port)

        if isinstance(node, RecordNode):
            return await self._run_record(flow, node, session, port)

        if isinstance(node, CallbackNode):
            return await self._run_callback(flow, node_id, node, session, port, started)

        if isinstance(node, SurveyNode):
            return await self._run_survey(flow, node_id, node, session, port, started)

        if isinstance(node, HangupNode):
            if node.prompt:
                await self._play(flow, node.prompt, session, port)
            if session.outcome is None:
                session.outcome = CallOutcome.COMPLETED
            await port.hang_up()
            return None

        raise AssertionError(f"unhandled node type {type(node).__name__}")

    # Caller needs: input settings and prompt renditions.

    def _profile(self, flow: Flow, session: CallSession) -> InputProfile:
        """Merge the flow's need profiles of the caller's tags: the slowest, most patient setting wins."""
        profiles = [flow.needs[tag] for tag in sorted(session.needs) if tag in flow.needs]
        if not profiles:
            return InputProfile()
        renditions = [profile.rendition for profile in profiles if profile.rendition]
        return InputProfile(
            timeout_factor=max(profile.timeout_factor for profile in profiles),
            extra_attempts=max(profile.extra_attempts for profile in profiles),
            rendition=renditions[0] if renditions else None,
            confirm=any(profile.confirm for profile in profiles),
        )

    def _rendition(self, flow: Flow, session: CallSession, prompt_id: str) -> str:
        """Return the prompt id to play: the caller's rendition when the catalog has it, else ``prompt_id``."""
        rendition = self._profile(flow, session).rendition
        if rendition is None:
            return prompt_id
        candidate = f"{prompt_id}@{rendition}"
        return candidate if candidate in flow.renditions else prompt_id

    async def _play(self, flow: Flow, prompt_id: str, session: CallSession, port: CallPort) -> str | None:
        """Play a prompt, or the flow's fallback prompt when the switch cannot play it."""
        prompt_id = self._rendition(flow, session, prompt_id)
        result = await port.play_prompt(prompt_id)
        if result.played:
            return result.digit

        session.prompt_failures.append(prompt_id)
        log.warning("prompt failed, playing fallback", call_id=session.call.call_id, prompt=prompt_id,
                    fallback=flow.settings.fallback_prompt)
        fallback = flow.settings.fallback_prompt
        if fallback and fallback != prompt_id:
            await port.play_prompt(fallback)
        return None

    async def _play_sequence(
        self, flow: Flow, prompt_ids: list[str], session: CallSession, port: CallPort, *, interrupt_keys: str = ""
    ) -> str | None:
        """Play pre-rendered fragments one after another; return the key that stopped them, if any.

        STREAM FILE plays one file per command, so a spoken number is one command per
        fragment. A fragment that cannot be played is recorded and skipped, because the
        rest of the number still tells the caller more than the fallback prompt would.
        """
        for prompt_id in prompt_ids:
            chosen = self._rendition(flow, session, prompt_id)
            result = await port.play_prompt(chosen, interrupt_keys=interrupt_keys)
            if not result.played:
                session.prompt_failures.append(chosen)
                log.warning("prompt fragment failed", call_id=session.call.call_id, prompt=chosen)
            if result.digit and result.digit in interrupt_keys:
                return result.digit
        return None

    async def _ask(
        self, flow: Flow, prompt_id: str, session: CallSession, port: CallPort, *, max_digits: int, timeout_ms: int
    ) -> DigitInput:
        """Play a prompt and collect keys, with the caller's rendition and a timeout stretched for their needs."""
        profile = self._profile(flow, session)
        chosen = self._rendition(flow, session, prompt_id)
        timeout = min(int(timeout_ms * profile.timeout_factor), 120_000)
        entry = await port.collect_digits(chosen, max_digits=max_digits, timeout_ms=timeout)
        if not entry.prompt_played:
            session.prompt_failures.append(chosen)
        return entry

    async def _reprompt(
        self, flow: Flow, prompts: str | list[str] | None, failures: int, session: CallSession, port: CallPort
    ) -> None:
        """Play the reprompt for the ``failures``-th failed attempt; a list escalates, its last item repeats."""
        if prompts is None:
            return
        if isinstance(prompts, str):
            await self._play(flow, prompts, session, port)
            return
        await self._play(flow, prompts[min(failures, len(prompts)) - 1], session, port)

    # Flow-wide keys.

    async def _handler_target(self, flow: Flow, node_id: str, digits: str, session: CallSession,
                              port: CallPort) -> str | None:
        """Return the handler's target when ``digits`` is exactly a flow-wide key, else None."""
        human = flow.handlers.human
        if human is not None and digits == human.key:
            session.skill = human.skill or DEFAULT_SKILL
            log.info("caller asked for a human", call_id=session.call.call_id, node=node_id, target=human.next)
            return human.next

        emergency = flow.handlers.emergency
        if emergency is not None and digits == emergency.key:
            session.emergency = True
            session.emergency_need = emergency.need
            session.needs.add(emergency.need)
            session.priority = max(session.priority, emergency.priority)
            if emergency.skill:
                session.skill = emergency.skill
            log.warning("caller raised an emergency", call_id=session.call.call_id, node=node_id,
                        priority=session.priority, target=emergency.next)
            await self._hooks.emergency_raised(session)
            if emergency.prompt:
                await self._play(flow, emergency.prompt, session, port)
            return emergency.next

        return None

    async def _run_menu(
        self, flow: Flow, node_id: str, node: MenuNode, session: CallSession, port: CallPort, started: float
    ) -> str:
        attempts = node.max_attempts + self._profile(flow, session).extra_attempts
        for attempt in range(1, attempts + 1):
            entry = await self._ask(flow, node.prompt, session, port, max_digits=1, timeout_ms=node.timeout_ms)

            key = entry.digits[:1]
            spoken = False
            if not key and node.listen is not None:
                key = await self._listen(flow, node_id, node.listen, session, port)
                spoken = bool(key)
            at_ms = int((self._clock() - started) * 1000)
            choice = node.choices.get(key) if key else None

            if choice is not None:
                session.keys.append(KeyPress(node_id, key, "accepted", at_ms))
                log.info("menu choice", call_id=session.call.call_id, node=node_id, key=key, attempt=attempt,
                         spoken=spoken)
                if choice.skill:
                    session.skill = choice.skill
                if choice.category:
                    session.category = choice.category
                    await self._hooks.category_chosen(session)
                return choice.next

            if key:
                target = await self._handler_target(flow, node_id, key, session, port)
                if target is not None:
                    session.keys.append(KeyPress(node_id, key, "handler", at_ms))
                    return target

            no_input = entry.outcome in (DigitOutcome.TIMEOUT, DigitOutcome.TERMINATOR_ONLY) or not key
            session.keys.append(KeyPress(node_id, entry.digits, "no_input" if no_input else "invalid", at_ms))
            log.info("menu input rejected", call_id=session.call.call_id, node=node_id, attempt=attempt,
                     reason="no_input" if no_input else "invalid_key")

            if attempt < attempts:
                await self._reprompt(flow, node.no_input_prompt if no_input else node.invalid_prompt, attempt,
                                     session, port)

        log.info("menu attempts exhausted", call_id=session.call.call_id, node=node_id, target=node.on_exhausted)
        return node.on_exhausted

    async def _listen(self, flow: Flow, node_id: str, listen: Listen, session: CallSession, port: CallPort) -> str:
        """Record a spoken answer and return the key its word stands for, or "" for none.

        Without a recogniser, or on a port that cannot record, the menu stays keys-only.
        A failed recording or recognition is logged and counts as no input.
        """
        if self._recognizer is None or not isinstance(port, AnswerRecorder):
            return ""
        call_id = session.call.call_id

        if listen.prompt is not None:
            await self._play(flow, listen.prompt, session, port)
        try:
            recording = await port.record_answer(f"{call_id}-{node_id}", max_seconds=listen.max_seconds,
                                                 silence_s=listen.silence_s)
        except CallPortError as error:
            log.warning("answer recording failed, keys only", call_id=call_id, node=node_id, error=str(error))
            return ""
        if recording.duration_s <= 0:
            return ""

        try:
            recognition = await self._recognizer.recognize(self._answer_path(recording.file_name), list(listen.words))
        except RecognizerError as error:
            log.warning("speech recognition failed, keys only", call_id=call_id, node=node_id, error=str(error))
            return ""
        key = choice_for(recognition, listen.words) or ""
        log.info("spoken answer", call_id=call_id, node=node_id, word=recognition.word, key=key or None,
                 elapsed_ms=recognition.elapsed_ms)
        return key

    async def _run_collect(
        self, flow: Flow, node_id: str, node: CollectNode, session: CallSession, port: CallPort, started: float
    ) -> str:
        profile = self._profile(flow, session)
        attempts = node.max_attempts + profile.extra_attempts
        for attempt in range(1, attempts + 1):
            entry = await self._ask(flow, node.prompt, session, port, max_digits=node.max_digits,
                                    timeout_ms=node.timeout_ms)
            at_ms = int((self._clock() - started) * 1000)
            digits = entry.digits

            target = await self._handler_target(flow, node_id, digits, session, port) if digits else None
            if target is not None:
                session.keys.append(KeyPress(node_id, digits, "handler", at_ms))
                return target

            value = normalize_id_number(digits) if node.check == "id_number" else digits
            if not digits:
                reason = "no_input"
            elif not self._entry_valid(node, value):
                reason = "invalid"
            else:
                reason = "accepted"

            # The digits may be an ID number, so only their count is kept and logged.
            session.keys.append(KeyPress(node_id, f"<{len(digits)} digits>", reason, at_ms))
            log.info("digits entered", call_id=session.call.call_id, node=node_id, attempt=attempt,
                     length=len(digits), result=reason)

            if reason == "accepted":
                confirmed = await self._confirm(flow, node.read_back, value, profile, session, port)
                if confirmed:
                    session.collected[node.field] = value
                    return node.next
                if attempt < attempts:
                    continue

            elif attempt < attempts:
                prompts = node.no_input_prompt if reason == "no_input" else node.invalid_prompt
                await self._reprompt(flow, prompts, attempt, session, port)

        log.info("digit entry attempts exhausted", call_id=session.call.call_id, node=node_id,
                 target=node.on_exhausted)
        return node.on_exhausted

    @staticmethod
    def _entry_valid(node: CollectNode, value: str) -> bool:
        if not node.min_digits <= len(value) <= node.max_digits:
            return False
        if node.check == "id_number":
            return valid_id_number(value)
        if node.check == "phone":
            return valid_phone(value)
        return value.isdigit()

    async def _confirm(
        self, flow: Flow, read_back: ReadBack | None, value: str, profile: InputProfile, session: CallSession,
        port: CallPort,
    ) -> bool:
        """Read ``value`` back digit by digit and return True when the caller presses 1.

        Without a read-back, or with one that applies only to callers who need it, the
        entry is accepted as typed.
        """
        if read_back is None or (read_back.when == "need" and not profile.confirm):
            return True

        # A caller who already knows the answer may press 1 or 2 during the read-back.
        fragments = [read_back.prompt, *digits_fragments(value)]
        key = await self._play_sequence(flow, fragments, session, port, interrupt_keys=CONFIRM_KEY + RETRY_KEY)
        if key is None:
            answer = await self._ask(flow, read_back.confirm_prompt, session, port, max_digits=1, timeout_ms=8000)
            key = answer.digits[:1]
        confirmed = key == CONFIRM_KEY
        log.info("read-back answered", call_id=session.call.call_id, confirmed=confirmed, retry=key == RETRY_KEY)
        return confirmed

    async def _run_set(self, node_id: str, node: SetNode, session: CallSession) -> str:
        if node.skill:
            session.skill = node.skill
        session.needs.update(node.needs)
        if node.priority is not None:
            session.priority = max(session.priority, node.priority)
        session.fields.update(node.fields)
        # Need tags are sensitive personal data (disability, health), so only their count is logged.
        log.info("call fields set", call_id=session.call.call_id, node=node_id, need_count=len(session.needs),
                 fields=sorted(node.fields), priority=session.priority)
        if node.category:
            session.category = node.category
            await self._hooks.category_chosen(session)
        return node.next

    def _run_branch(self, node_id: str, node: BranchNode, session: CallSession) -> str:
        for index, case in enumerate(node.cases):
            if self._holds(case.when, session):
                log.info("branch taken", call_id=session.call.call_id, node=node_id, case=index, target=case.next)
                return case.next
        log.info("branch taken", call_id=session.call.call_id, node=node_id, case="otherwise", target=node.otherwise)
        return node.otherwise

    def _holds(self, when: BranchCondition, session: CallSession) -> bool:
        """Return True when every test given in ``when`` holds for the call now."""
        local = self._wall_clock().astimezone(LOCAL_TZ)
        if when.need is not None and when.need not in session.needs:
            return False
        if when.time is not None:
            begin, finish = when.time.split("-")
            if not begin <= local.strftime("%H:%M") < finish:
                return False
        if when.working_day is not None and self._calendar.is_working_day(local.date()) != when.working_day:
            return False
        if when.agents_for is not None and self._pool.has_agent_for(when.agents_for) != when.agents_available:
            return False
        if when.caller == "known" and session.caller_profile is None:
            return False
        if when.caller == "open_ticket" and (session.caller_profile is None
                                             or session.caller_profile.open_ticket is None):
            return False
        if when.caller == "overflow" and session.handoff is None:
            return False
        return True

    # Call start: the caller's profile and the flow's call-start cases.

    async def _start_node(self, flow: Flow, session: CallSession) -> str:
        """Look the caller up, apply their profile to the session and return the first node to run."""
        self._apply_handoff(session)
        await self._apply_caller_profile(session)
        for index, case in enumerate(flow.handlers.call_start):
            if self._holds(case.when, session):
                log.info("call-start case taken", call_id=session.call.call_id, case=index, target=case.next)
                return case.next
        return flow.start

    def _apply_handoff(self, session: CallSession) -> None:
        """Take over the need tags, priority and ticket link a lower tier sent with an overflowing call.

        A bad value is logged and the call runs as one without a handoff, so the caller is
        still served through the flow.
        """
        call_id = session.call.call_id
        try:
            handoff = handoff_from_args(session.call.args)
        except HandoffError as exc:
            log.warning("overflow handoff unusable, call runs without it", call_id=call_id, error=str(exc))
            return
        if handoff is None:
            return

        session.handoff = handoff
        session.needs.update(handoff.needs)
        session.priority = max(session.priority, handoff.priority)
        if session.priority >= self._pool.settings.emergency_priority:
            session.emergency = True
        # Need tags are sensitive, so only their count is logged.
        log.info("overflow from lower tier", call_id=call_id, lower_ticket_id=handoff.ticket_id,
                 need_count=len(handoff.needs), priority=handoff.priority)

    async def _apply_caller_profile(self, session: CallSession) -> None:
        """Add a known caller's need tags, preferred agent and open ticket's skill to the session."""
        if self._callers is None:
            return
        profile = await self._callers.find_caller(session.call.call_id, session.call.caller.number)
        if profile is None:
            return

        session.caller_profile = profile
        session.needs.update(profile.need_tags)
        session.preferred_agent = profile.preferred_agent
        ticket = profile.open_ticket
        if ticket is not None:
            if ticket.skill:
                session.skill = ticket.skill
            if ticket.agent_id:
                session.preferred_agent = ticket.agent_id
            session.fields["related_ticket_id"] = ticket.ticket_id
        # Need tags are sensitive, so only their count is logged.
        log.info("caller profile applied", call_id=session.call.call_id, need_count=len(profile.need_tags),
                 preferred_agent=session.preferred_agent, open_ticket=ticket.ticket_id if ticket else None)

    async def _run_transfer(self, flow: Flow, node: TransferNode, session: CallSession, port: CallPort) -> str:
        await self._play(flow, node.prompt, session, port)
        result = await port.transfer_outside(node.number, node.trunk, ring_timeout_s=node.ring_timeout_s)
        log.info("transfer finished", call_id=session.call.call_id, tier=node.tier, trunk=node.trunk,
                 status=result.status.value)
        if not result.answered:
            return node.on_failed
        session.transferred_to = node.tier
        session.talk_seconds = result.talk_seconds
        if session.outcome is None:
            session.outcome = CallOutcome.COMPLETED
        return node.next

    async def _run_record(self, flow: Flow, node: RecordNode, session: CallSession, port: CallPort) -> str:
        await self._play(flow, node.prompt, session, port)
        result = await port.record_message(f"msg-{session.call.call_id}", max_seconds=node.max_seconds,
                                           silence_s=node.silence_s)
        log.info("message recorded", call_id=session.call.call_id, file=result.file_name,
                 seconds=round(result.duration_s, 1))
        if result.duration_s > 0:
            session.recording_file = result.file_name
            session.recording_seconds = result.duration_s
            await self._hooks.message_recorded(session)
        return node.next

    async def _run_callback(
        self, flow: Flow, node_id: str, node: CallbackNode, session: CallSession, port: CallPort, started: float
    ) -> str:
        """Offer the caller's own number (1) or another number (2), read it back and confirm it."""
        profile = self._profile(flow, session)
        attempts = node.max_attempts + profile.extra_attempts
        own_number = session.call.caller.number
        for attempt in range(1, attempts + 1):
            use_own = False
            if own_number is not None:
                choice = await self._ask(flow, node.prompt, session, port, max_digits=1, timeout_ms=node.timeout_ms)
                key = choice.digits[:1]
                target = await self._handler_target(flow, node_id, key, session, port) if key else None
                if target is not None:
                    return target
                if key not in (CONFIRM_KEY, RETRY_KEY):
                    log.info("callback offer not answered", call_id=session.call.call_id, node=node_id,
                             attempt=attempt)
                    continue
                use_own = key == CONFIRM_KEY

            number = own_number if use_own else await self._callback_number(flow, node, session, port)
            if number is None:
                continue

            if await self._confirm(flow, node.read_back, number, profile, session, port):
                session.callback_number = number
                session.callback_is_caller_number = use_own
                log.info("callback requested", call_id=session.call.call_id, node=node_id, own_number=use_own)
                await self._hooks.callback_requested(session)
                await self._play(flow, node.done_prompt, session, port)
                return node.next

        log.info("callback attempts exhausted", call_id=session.call.call_id, node=node_id, target=node.on_exhausted)
        return node.on_exhausted

    async def _callback_number(self, flow: Flow, node: CallbackNode, session: CallSession,
                               port: CallPort) -> str | None:
        entry = await self._ask(flow, node.number_prompt, session, port, max_digits=12, timeout_ms=node.timeout_ms)
        if valid_phone(entry.digits):
            return entry.digits
        log.info("callback number rejected", call_id=session.call.call_id, length=len(entry.digits))
        return None

    async def _run_survey(
        self, flow: Flow, node_id: str, node: SurveyNode, session: CallSession, port: CallPort, started: float
    ) -> str:
        entry = await self._ask(flow, node.prompt, session, port, max_digits=1, timeout_ms=node.timeout_ms)
        key = entry.digits[:1]
        at_ms = int((self._clock() - started) * 1000)
        if key in SURVEY_KEYS:
            session.survey_score = int(key)
            session.keys.append(KeyPress(node_id, key, "accepted", at_ms))
            await self._hooks.survey_answered(session)
            if node.thanks_prompt:
                await self._play(flow, node.thanks_prompt, session, port)
        else:
            session.keys.append(KeyPress(node_id, entry.digits, "invalid" if key else "no_input", at_ms))
        log.info("survey answered", call_id=session.call.call_id, node=node_id, score=session.survey_score)
        return node.next

    async def _run_queue(self, flow: Flow, node: QueueNode, session: CallSession, port: CallPort) -> str:
        call_id = session.call.call_id
        skill = node.skill or session.skill or DEFAULT_SKILL
        session.skill = skill
        session.queue_entered_at = self._wall_clock()

        # An emergency that no agent here takes within the configured time goes up a tier.
        overflow = node.emergency_overflow
        if session.priority < self._pool.settings.emergency_priority:
            overflow = None

        if not self._pool.has_agent_for(skill):
            log.warning("no agent logged in for skill", call_id=call_id, skill=skill)
            if overflow is not None:
                return await self._overflow(flow, node, overflow, session, port, self._clock())
            session.outcome = CallOutcome.NO_AGENT
            return node.on_no_agent

        await self._play(flow, node.prompt, session, port)
        if node.recording_notice:
            await self._play(flow, node.recording_notice, session, port)
        queued_at = self._clock()
        deadline = queued_at + node.max_wait_s
        overflow_at = queued_at + overflow.after_s if overflow is not None else None
        declined: set[str] = set()
        callback = self._queue_callback(node, session)

        # Tell the caller where they stand at once, unless an agent is free for them now. The
        # first reserve also puts the call in the pool's waiting list, so callers arriving
        # during this announcement count it as ahead of them.
        free_now: Reservation | None = None
        if node.announce_position:
            free_now = await self._reserve(session, declined, timeout_s=0)
            if free_now is None and await self._announce_queue(flow, node, session, port, callback,
                                                               with_wait_prompt=False):
                return await self._keep_place(flow, callback, session, port, queued_at)

        while (remaining := deadline - self._clock()) > 0:
            if free_now is not None:
                waited: Reservation | None | _CallbackChosen = free_now
                free_now = None
            else:
                timeout_s = min(remaining, node.announce_every_s)
                if overflow_at is not None:
                    timeout_s = min(timeout_s, max(overflow_at - self._clock(), 0.0))
                waited = await self._wait_for_agent(node, session, port, callback, declined, timeout_s=timeout_s)
            if waited is _CALLBACK_CHOSEN:
                return await self._keep_place(flow, callback, session, port, queued_at)
            reservation = waited
            if reservation is None:
                if overflow is not None and overflow_at is not None and self._clock() >= overflow_at:
                    return await self._overflow(flow, node, overflow, session, port, queued_at)
                if deadline - self._clock() > 0 and await self._announce_queue(flow, node, session, port, callback):
                    return await self._keep_place(flow, callback, session, port, queued_at)
                continue

            # A caller who hangs up while the agent rings leaves the outcome at ABANDONED, so
            # the pool does not pause the agent for a ring-no-answer.
            release_outcome = ReleaseOutcome.ABANDONED
            try:
                if self._callers is not None and session.caller_profile is not None:
                    await self._callers.agent_ringing(call_id, reservation.agent_id, session.caller_profile)
                if node.recording_notice and session.call_recording_file is None:
                    # The caller heard the notice on entry; the recording covers the bridge only.
                    session.call_recording_file = await port.start_call_recording(f"call-{call_id}")
                result = await port.connect_agent(reservation.endpoint, ring_timeout_s=node.ring_timeout_s)
                release_outcome = _release_outcome(result)
            finally:
                await self._pool.release(reservation, reason="dial_returned", outcome=release_outcome)

            if result.answered:
                session.agent_id = reservation.agent_id
                session.outcome = CallOutcome.ANSWERED
                session.talk_seconds = result.talk_seconds
                session.answered_at = self._wall_clock() - timedelta(seconds=result.talk_seconds)
                self.handle_times.record(skill, result.talk_seconds + self._pool.settings.wrap_up_s)
                log.info("agent call ended", call_id=call_id, agent_id=reservation.agent_id,
                         talk_s=round(result.talk_seconds, 1))
                await self._hooks.agent_answered(session)
                return node.next

            declined.add(reservation.agent_id)
            log.info("agent did not answer", call_id=call_id, agent_id=reservation.agent_id, status=result.status.value)
            if node.retry_prompt:
                await self._play(flow, node.retry_prompt, session, port)
            if not self._pool.has_agent_for(skill):
                break
            if declined.issuperset(a.agent_id for a in self._pool.snapshot() if skill in a.skills):
                # Every agent with the skill has been tried once; give them another chance.
                declined.clear()

        if overflow is not None:
            return await self._overflow(flow, node, overflow, session, port, queued_at)
        session.outcome = CallOutcome.NO_AGENT
        log.info("no agent within queue limit", call_id=call_id, skill=skill, max_wait_s=node.max_wait_s)
        return node.on_no_agent

    async def _overflow(
        self, flow: Flow, node: QueueNode, overflow: EmergencyOverflow, session: CallSession, port: CallPort,
        queued_at: float,
    ) -> str:
        """Send an emergency call to the tier above: through the trunk, else as an escalated callback ticket.

        The ticket exists before the trunk dial, so its id travels in the INVITE with the
        need tags and the priority, and the tier above does not ask the caller again. A
        caller without a number cannot be called back from above: when the trunk fails for
        them, the call goes to the queue's ``on_no_agent``.
        """
        call_id = session.call.call_id
        session.overflow_waited_s = round(max(self._clock() - queued_at, 0.0), 1)
        session.overflow_tier = overflow.tier
        session.outcome = CallOutcome.NO_AGENT
        target = f"trunk:{overflow.trunk}" if overflow.via == "trunk" else f"callback:{overflow.tier}"
        self._pool.overflowed(call_id, target=target)
        log.warning("emergency overflow to tier above", call_id=call_id, via=overflow.via, tier=overflow.tier,
                    waited_s=session.overflow_waited_s, skill=session.skill)

        if overflow.via == "trunk" and overflow.trunk is not None and overflow.number is not None:
            session.overflow_via = "trunk"
            await self._hooks.overflow_dialling(session)
            if overflow.prompt:
                await self._play(flow, overflow.prompt, session, port)
            handoff = OverflowHandoff(session.ticket_id, frozenset(session.needs), session.priority)
            result = await port.transfer_outside(overflow.number, overflow.trunk,
                                                 ring_timeout_s=overflow.ring_timeout_s, handoff=handoff)
            log.info("overflow transfer finished", call_id=call_id, ticket_id=session.ticket_id,
                     trunk=overflow.trunk, status=result.status.value)
            if result.answered:
                session.transferred_to = overflow.tier
                session.talk_seconds = result.talk_seconds
                session.outcome = CallOutcome.COMPLETED
                return overflow.next

        if not session.call.caller.number:
            log.warning("emergency overflow cannot ask for a callback: caller has no number", call_id=call_id)
            return node.on_no_agent

        # The trunk failed or is not configured: the tier above calls the caller back.
        session.overflow_via = "callback"
        session.callback_number = session.call.caller.number
        session.callback_is_caller_number = True
        if not await self._hooks.overflow_escalated(session):
            log.error("emergency overflow not escalated, queue's no-agent path taken", call_id=call_id)
            session.overflow_via = None
            session.callback_number = None
            session.callback_is_caller_number = False
            return node.on_no_agent
        await self._play(flow, overflow.callback_prompt, session, port)
        return overflow.next

    @staticmethod
    def _queue_callback(node: QueueNode, session: CallSession) -> QueueCallback | None:
        """Return the queue's callback offer, or None when there is none or no number to call back."""
        if node.callback is None or not session.call.caller.number:
            return None
        return node.callback

    async def _reserve(self, session: CallSession, declined: set[str], *, timeout_s: float) -> Reservation | None:
        return await self._pool.reserve(
            session.call.call_id, session.skill or DEFAULT_SKILL, timeout_s=timeout_s, exclude=declined,
            priority=session.priority, needs=frozenset(session.needs), preferred_agent=session.preferred_agent,
        )

    async def _wait_for_agent(
        self, node: QueueNode, session: CallSession, port: CallPort, callback: QueueCallback | None,
        declined: set[str], *, timeout_s: float,
    ) -> Reservation | None | _CallbackChosen:
        """Wait up to ``timeout_s`` for an agent, with hold music and the callback key when the node has them.

        Returns the reservation, None on timeout, or ``_CALLBACK_CHOSEN`` when the caller
        pressed the callback key and no agent was reserved meanwhile.
        """
        if node.hold_music is None and callback is None:
            return await self._reserve(session, declined, timeout_s=timeout_s)

        # An agent free right now takes the call without a burst of music first.
        reservation = await self._reserve(session, declined, timeout_s=0)
        if reservation is not None:
            return reservation

        waiting = asyncio.ensure_future(self._reserve(session, declined, timeout_s=timeout_s))
        chosen = False
        try:
            if node.hold_music is not None:
                await port.start_hold_music(node.hold_music)
            chosen = await self._listen_while_waiting(waiting, callback, port)
        finally:
            # The caller hung up or chose a callback: cancelling frees an agent reserved meanwhile.
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait({waiting})

        # The agent's ring replaces the music, so it stops before the dial.
        if node.hold_music is not None:
            await port.stop_hold_music()
        if waiting.cancelled():
            return _CALLBACK_CHOSEN
        reservation = waiting.result()
        if chosen and reservation is None:
            return _CALLBACK_CHOSEN
        # An agent reserved while the key was pressed takes precedence over the callback.
        return reservation

    @staticmethod
    async def _listen_while_waiting(waiting: asyncio.Future[Reservation | None], callback: QueueCallback | None,
                                    port: CallPort) -> bool:
        """Listen for the callback key until ``waiting`` is done; return True when the caller pressed it."""
        if callback is None:
            await asyncio.wait({waiting})
            return False
        while not waiting.done():
            key = await port.wait_for_key(QUEUE_KEY_POLL_MS)
            if key == callback.key:
                return True
        return False

    async def _announce_queue(
        self, flow: Flow, node: QueueNode, session: CallSession, port: CallPort, callback: QueueCallback | None,
        *, with_wait_prompt: bool = True,
    ) -> bool:
        """Play the queue announcement: place and wait, the wait prompt, the callback offer.

        Returns True when the caller pressed the callback key during it.
        """
        if not node.announce_position and callback is None:
            await self._play(flow, node.wait_prompt, session, port)
            return False

        fragments = self._position_fragments(session) if node.announce_position else []
        if with_wait_prompt:
            fragments.append(node.wait_prompt)
        if callback is not None:
            fragments.append(callback.prompt)
        key = await self._play_sequence(flow, fragments, session, port,
                                        interrupt_keys=callback.key if callback is not None else "")
        return key is not None

    def _position_fragments(self, session: CallSession) -> list[str]:
        """Return 您前面还有N位来电者在等待 (or 您现在排在第一位) and 预计还需等待M分钟 as fragments."""
        skill = session.skill or DEFAULT_SKILL
        estimate: QueueEstimate = estimate_queue(
            call_id=session.call.call_id, skill=skill, agents=self._pool.snapshot(),
            waiting=self._pool.waiting_calls(), handle_times=self.handle_times,
        )
        log.info("queue position announced", call_id=session.call.call_id, skill=skill, ahead=estimate.ahead,
                 serving_agents=estimate.serving_agents, handle_time_s=round(estimate.handle_time_s),
                 wait_minutes=estimate.wait_minutes)
        if estimate.ahead == 0:
            fragments = queue_position_fragments(1)
        else:
            fragments = callers_ahead_fragments(estimate.ahead)
        if estimate.wait_minutes is not None:
            fragments += wait_minutes_fragments(estimate.wait_minutes)
        return fragments

    async def _keep_place(
        self, flow: Flow, callback: QueueCallback | None, session: CallSession, port: CallPort, queued_at: float
    ) -> str:
        """Record the caller's callback request with their place in the queue and confirm it."""
        assert callback is not None
        session.callback_number = session.call.caller.number
        session.callback_is_caller_number = True
        session.queue_place = QueuePlace(
            skill=session.skill or DEFAULT_SKILL, waiting_since=queued_at, priority=session.priority,
            needs=frozenset(session.needs), preferred_agent=session.preferred_agent,
        )
        # The call left the queue without an agent; its place is kept for the callback.
        session.outcome = CallOutcome.NO_AGENT
        log.info("queue callback chosen", call_id=session.call.call_id, skill=session.queue_place.skill,
                 waited_s=round(self._clock() - queued_at, 1))
        await self._hooks.callback_requested(session)
        await self._play(flow, callback.done_prompt, session, port)
        return callback.next
