"""Domain: records the pool leaves behind, agent state changes and routing decisions.

Both are frozen and turn into plain dicts (``to_dict``/``from_dict``) for storage; the
Chinese rendering for operators is ``describe_decision``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from tickets.model import CHINA_TZ

# Rule that fired for a decision → Chinese explanation.
RULE_LABELS = {
    "emergency_first": "紧急来电（优先级 9）排在所有来电之前，取分数最高的合格坐席",
    "preferred_agent": "来电人上次的接待坐席空闲，优先接回给他",
    "tie_longest_idle": "几名合格坐席分数相同，选空闲最久的一名",
    "best_agent": "排队分数最高的来电，取分数最高的合格坐席",
    "higher_calls_ineligible": "排在前面的来电用不上剩下的空闲坐席，本来电取分数最高的合格坐席",
    "no_eligible_agent": "来电到达时没有合格的空闲坐席，继续排队",
    "emergency_overflow": "紧急来电等待期间本级没有坐席可接，溢出至上级",
}


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One agent state transition, stamped in UTC."""

    at: datetime
    agent_id: str
    previous: str
    state: str
    reason: str
    call_id: str | None = None
    pause_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Exclusion:
    agent_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CandidateScore:
    agent_id: str
    score: float
    idle_s: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WaitingCallScore:
    call_id: str
    score: float
    priority: int


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Why one call got one agent, or none: candidates best first, exclusions, scores, rule."""

    call_id: str
    decided_at: datetime
    rule: str
    skill: str
    needs: tuple[str, ...]
    priority: int
    call_score: float
    chosen_agent: str | None
    candidates: tuple[CandidateScore, ...]
    exclusions: tuple[Exclusion, ...]
    waiting: tuple[WaitingCallScore, ...]
    # Where an emergency call went when it left this pool for the tier above
    # ("trunk:<trunk>" or "callback:<tier>"); None for every other rule.
    overflow_target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["decided_at"] = self.decided_at.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingDecision:
        return cls(
            call_id=data["call_id"], decided_at=datetime.fromisoformat(data["decided_at"]), rule=data["rule"],
            skill=data["skill"], needs=tuple(data["needs"]), priority=int(data["priority"]),
            call_score=float(data["call_score"]), chosen_agent=data["chosen_agent"],
            candidates=tuple(
                CandidateScore(c["agent_id"], float(c["score"]), float(c["idle_s"]), tuple(c["reasons"]))
                for c in data["candidates"]
            ),
            exclusions=tuple(Exclusion(e["agent_id"], e["reason"]) for e in data["exclusions"]),
            waiting=tuple(WaitingCallScore(w["call_id"], float(w["score"]), int(w["priority"])) for w in data["waiting"]),
            # Rows written before the field existed lack it.
            overflow_target=data.get("overflow_target"),
        )


def describe_decision(decision: RoutingDecision) -> list[str]:
    """Render one decision as Chinese lines for an operator."""
    local = decision.decided_at.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")
    needs = "、".join(decision.needs) or "无"
    chosen = decision.chosen_agent or "（未分配）"
    lines = [
        f"{local}  来电 {decision.call_id}  技能 {decision.skill}  需求 {needs}  "
        f"优先级 {decision.priority}  排队分数 {decision.call_score:g}",
        f"  结果：{chosen}",
        f"  规则：{RULE_LABELS.get(decision.rule, decision.rule)}",
    ]
    if decision.overflow_target is not None:
        lines.append(f"  紧急来电溢出至上级：{decision.overflow_target}")
    if decision.candidates:
        lines.append("  合格坐席（从高到低）：")
        for c in decision.candidates:
            lines.append(f"    {c.agent_id}  分数 {c.score:g}  已空闲 {c.idle_s:g} 秒  （{'，'.join(c.reasons)}）")
    if decision.exclusions:
        lines.append("  排除的坐席：")
        lines.extend(f"    {e.agent_id}：{e.reason}" for e in decision.exclusions)
    if len(decision.waiting) > 1:
        board = "，".join(f"{w.call_id}（{w.score:g}）" for w in decision.waiting)
        lines.append(f"  当时排队的来电（按分数）：{board}")
    return lines
