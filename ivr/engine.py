"""Domain: runs one call through a flow, node by node, over a ``CallPort``.

The runner uses no Asterisk or SQLite code. It asks the ``AgentPool`` for agents,
tells ``CallHooks`` when the caller picks a category or reaches an agent (the
controller opens tickets there), and returns a ``CallSession`` that records the path,
the keys, the agent and how the call ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from acd.pool import AgentPool, ReleaseOutcome
from ivr.call import Call
from ivr.entry import digit_prompts, normalize_id_number, valid_id_number, valid_phone
from ivr.flow import (
    DEFAULT_SKILL,
    BranchCondition,
    BranchNode,
    CallbackNode,
    CollectNode,
    Flow,
    HangupNode,
    MenuNode,
    PlayNode,
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
    WorkCalendar,
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


def utc_now() -> datetime:
    return datetime.now(UTC)


class _FlowLooped(Exception):
    pass


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
    ):
        self._pool = pool
        self._hooks = hooks
        self._clock = clock
        self._wall_clock = wall_clock
        self._calendar = calendar if calendar is not None else WeekdayCalendar()

    async def run(self, flow: Flow, call: Call, port: CallPort) -> CallSession:
        """Run ``call`` from the flow's start node until it hangs up or the flow ends."""
        session = CallSession(call=call, flow_id=flow.flow_id, flow_version=flow.version)
        started = self._clock()
        bound = structlog.contextvars.bind_contextvars(flow=flow.flow_id, flow_version=flow.version[:12])

        try:
            await port.answer()
            node_id: str | None = flow.start
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

            at_ms = int((self._clock() - started) * 1000)
            key = entry.digits[:1]
            choice = node.choices.get(key) if key else None

            if choice is not None:
                session.keys.append(KeyPress(node_id, key, "accepted", at_ms))
                log.info("menu choice", call_id=session.call.call_id, node=node_id, key=key, attempt=attempt)
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

        await self._play(flow, read_back.prompt, session, port)
        for digit_prompt in digit_prompts(value):
            await self._play(flow, digit_prompt, session, port)
        answer = await self._ask(flow, read_back.confirm_prompt, session, port, max_digits=1, timeout_ms=8000)
        confirmed = answer.digits[:1] == CONFIRM_KEY
        log.info("read-back answered", call_id=session.call.call_id, confirmed=confirmed,
                 retry=answer.digits[:1] == RETRY_KEY)
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
        return True

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

        if not self._pool.has_agent_for(skill):
            log.warning("no agent logged in for skill", call_id=call_id, skill=skill)
            session.outcome = CallOutcome.NO_AGENT
            return node.on_no_agent

        await self._play(flow, node.prompt, session, port)
        deadline = self._clock() + node.max_wait_s
        declined: set[str] = set()

        # NOTE: the caller hears silence between announcements because AGI runs one command
        # at a time. Music on hold needs the switch to play it while the controller waits.
        while (remaining := deadline - self._clock()) > 0:
            reservation = await self._pool.reserve(
                call_id, skill, timeout_s=min(remaining, node.announce_every_s), exclude=declined,
                priority=session.priority,
            )
            if reservation is None:
                if deadline - self._clock() > 0:
                    await self._play(flow, node.wait_prompt, session, port)
                continue

            # A caller who hangs up while the agent rings leaves the outcome at ABANDONED, so
            # the pool does not pause the agent for a ring-no-answer.
            release_outcome = ReleaseOutcome.ABANDONED
            try:
                result = await port.connect_agent(reservation.endpoint, ring_timeout_s=node.ring_timeout_s)
                release_outcome = _release_outcome(result)
            finally:
                await self._pool.release(reservation, reason="dial_returned", outcome=release_outcome)

            if result.answered:
                session.agent_id = reservation.agent_id
                session.outcome = CallOutcome.ANSWERED
                session.talk_seconds = result.talk_seconds
                session.answered_at = self._wall_clock() - timedelta(seconds=result.talk_seconds)
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

        session.outcome = CallOutcome.NO_AGENT
        log.info("no agent within queue limit", call_id=call_id, skill=skill, max_wait_s=node.max_wait_s)
        return node.on_no_agent
