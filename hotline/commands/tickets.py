"""CLI: ``hotline tickets`` lists a node's tickets, shows their event trail and applies lifecycle actions.

Exit codes: 0 on success, 1 when the request is rejected (unknown ticket, action not allowed,
missing reason), 2 when an option value of ``list``, the configuration or the database cannot be used.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

import click
from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Table

from hotline.commands.console import FitColumn, fit_columns, fit_table, operator_console
from hotline.config import ConfigError, NodeConfig, load_node_config
from hotline.logging import configure_logging
from hotline.queue_callbacks import CallbackResult
from storage.errors import StorageBusy, StorageError, TicketConflict, TicketNotFound
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome
from tickets.envelope import EMERGENCY_OVERFLOW_REASON, INSTRUCTION_KINDS
from tickets.lifecycle import (
    ACTIONS,
    CANCEL_REASONS,
    EVENT_KIND_LABELS,
    RETURN_REASONS,
    Field,
    TransitionRejected,
    allowed_actions,
    event_kind_label,
    reason_label,
)
from tickets.model import Ticket, TicketCategory, TicketEvent, TicketState, Tier
from tickets.sla import CASE_KIND_KEY, ClockUnit, Phase
from tier_sync.escalation import ESCALATE_TO_KEY
from tier_sync.instructions import InvalidInstruction, issue_instruction

CHINA = ZoneInfo("Asia/Shanghai")

LINK_LABELS = {
    "merged": "并入",
    "escalated": "提级至",
    # Written by the tier chain: the higher tier's ticket points back at the escalated one, and
    # the escalated one records the id the higher tier gave its ticket.
    "escalated_from": "提级自",
    "escalation_linked": "提级后的上级工单为",
}


def _local(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


async def _open_store(config: NodeConfig) -> TicketStore:
    return await TicketStore.open(config.database, config.node_id, config.region_code, tier=Tier(config.tier))


@dataclass(frozen=True)
class ListFilter:
    """The ``tickets list`` filters; None keeps every value."""

    states: frozenset[TicketState] | None = None
    category: TicketCategory | None = None
    since: date | None = None

    def describe(self) -> str:
        """Return the filters as Chinese text for the title, or "" when there are none."""
        parts = []
        if self.states:
            parts.append("状态：" + "、".join(state.label for state in TicketState if state in self.states))
        if self.category is not None:
            parts.append(f"类别：{self.category.label}")
        if self.since is not None:
            parts.append(f"{self.since.isoformat()} 起受理（北京时间）")
        return "；".join(parts)


@dataclass(frozen=True)
class TicketPage:
    """The newest tickets of a node that match a filter, and how many match in all."""

    node_id: str
    tickets: list[Ticket]
    total: int
    filters: ListFilter


def _choice_text(labels: Mapping[str, str]) -> str:
    # Spaces between the choices let a narrow console wrap between them, never inside a code.
    return "  ".join(f"{label} {code}" for code, label in labels.items())


_STATE_CHOICES = MappingProxyType({state.value: state.label for state in TicketState})
_CATEGORY_CHOICES = MappingProxyType({category.value: category.label for category in TicketCategory})


def parse_states(values: tuple[str, ...]) -> frozenset[TicketState] | None:
    """Parse ``--state`` values, each a Chinese state name or a code, several allowed per value with commas."""
    states = set()
    for value in values:
        for item in value.replace("，", ",").split(","):
            item = item.strip()
            if not item:
                continue
            state = next((s for s in TicketState if item in (s.label, s.value) or item.lower() == s.value), None)
            if state is None:
                raise click.BadParameter(f"状态“{item}”不认识，请填中文名或代码：{_choice_text(_STATE_CHOICES)}")
            states.add(state)
    return frozenset(states) or None


def parse_category(value: str | None) -> TicketCategory | None:
    """Parse ``--category``, a Chinese category name or a code."""
    if value is None:
        return None
    item = value.strip()
    for category in TicketCategory:
        if item in (category.label, category.value) or item.lower() == category.value:
            return category
    raise click.BadParameter(f"类别“{value}”不认识，请填中文名或代码：{_choice_text(_CATEGORY_CHOICES)}")


def parse_since(value: str | None) -> date | None:
    """Parse ``--since``, a Beijing date written YYYY-MM-DD."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"日期“{value}”格式不对，请写 YYYY-MM-DD（北京时间），例如 2026-12-05") from None


async def _list(config_path: Path, limit: int, filters: ListFilter) -> TicketPage:
    config = load_node_config(config_path)
    since = datetime.combine(filters.since, time(), CHINA) if filters.since else None
    async with await _open_store(config) as store:
        tickets = await store.list_tickets(
            limit=limit, newest_first=True, states=filters.states, category=filters.category, created_since=since,
        )
        total = await store.count_tickets(states=filters.states, category=filters.category, created_since=since)
    return TicketPage(config.node_id, tickets, total, filters)


def render_ticket_list(page: TicketPage, width: int) -> Table:
    """Build the ticket table within ``width`` columns, newest first, with ids and times whole."""
    listed = len(page.tickets)
    described = page.filters.describe()
    if described:
        count = f"{described}；显示最近 {listed} 张，符合条件的共 {page.total} 张"
    else:
        count = f"显示最近 {listed} 张，共 {page.total} 张"

    # The origin column matters only where tickets from other nodes are stored (a parent tier).
    with_origin = any(ticket.origin_node != page.node_id for ticket in page.tickets)
    columns = [
        FitColumn("工单号", whole=True),
        FitColumn("来源节点", whole=True),
        FitColumn("类别"),
        FitColumn("状态", whole=True),
        FitColumn("来电号码", whole=True, drop_rank=1),
        FitColumn("受理时间（北京时间）", whole=True),
        FitColumn("事件数", whole=True, drop_rank=2, justify="right"),
    ]
    rows = [
        [ticket.ticket_id, ticket.origin_node, ticket.category.label, ticket.state.label, ticket.caller_masked,
         _local(ticket.created_at), str(ticket.last_seq)]
        for ticket in page.tickets
    ]
    if not with_origin:
        del columns[1]
        for row in rows:
            del row[1]
    return fit_table(f"节点 {page.node_id} 的工单（{count}）", columns, rows, width)


def _state_change(event: TicketEvent) -> str:
    if event.to_state is None:
        return f"（仍为{event.from_state.label}）" if event.from_state else ""
    if event.from_state is None:
        return event.to_state.label
    return f"{event.from_state.label} → {event.to_state.label}"


def _who(event: TicketEvent) -> str:
    return f"{event.tier.label}级 {event.office}" if event.office else f"{event.tier.label}级"


# Payload keys that the IVR, the ticket desk, the lifecycle, the tier chain, the standby
# controller and the SLA extensions write, as operators call them. A key missing here is
# shown as stored.
_PAYLOAD_LABELS: Mapping[str, str] = MappingProxyType({
    # The call that opened the ticket, written by the ticket desk and the standby controller.
    "call_id": "通话编号", "channel": "渠道", "skill": "技能组", "flow_id": "流程", "flow_version": "流程版本",
    "caller_flags": "号码标记", "opened_because": "受理原因", "caller_ref": "来电号码索引",
    "profile_ref": "档案索引", "lower_tier_ticket_id": "下级工单", "agi_status": "交换机 AGI 状态",
    "failure": "故障原因",
    # Agent answer, end of call, survey and voice message.
    "agent_id": "坐席", "talk_seconds": "通话秒数", "answered_at": "接听时间", "outcome": "通话结果",
    "last_node": "最后节点", "duration_seconds": "时长（秒）", "path": "路径", "emergency": "紧急来电",
    "priority": "优先级", "fields": "采集的信息", "transferred_to": "转接至", "score": "评分",
    "file_name": "录音文件",
    # Emergency alert and overflow to the tier above.
    "need": "紧急需求", "needs": "特殊需求", "node": "流程节点", "via": "转上级方式", "tier": "上级层级",
    "waited_seconds": "等待秒数", "reason": "原因", "emergency_callback_number": "紧急回电号码",
    # Callback requests, callback tasks and queue callbacks.
    "number": "回电号码", "number_masked": "回电号码（脱敏）", "number_sealed": "回电号码（加密）",
    "number_ref": "回电号码索引", "caller_number": "回拨来电号码", "queue_skill": "保留排队的技能组",
    "result": "回电结果", "requested_by": "申请方",
    # Attachments, merges, escalations and instructions from the tier above.
    "attachment_id": "附件编号（SHA-256）", "size_bytes": "大小（字节）", "media_type": "文件类型",
    "source_ticket_id": "并入的工单", "target_ticket_id": "关联工单", ESCALATE_TO_KEY: "提级至节点",
    "escalated_from_ticket_id": "提级来源工单", "escalated_from_node_id": "提级来源节点",
    "escalation_event_id": "提级事件", "instruction_id": "上级指令编号", "issuer_node_id": "指令下达节点",
    # SLA: an approved extension and the case kind that selects the time limits.
    "phase": "时限环节", "extra": "延长", CASE_KIND_KEY: "案件类型",
})

# Chinese words for the enumerated values of some keys; other values are shown as stored.
_PAYLOAD_VALUES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "channel": {"phone": "电话"},
    "opened_because": {
        **EVENT_KIND_LABELS,
        "category_chosen": "来电者选择了业务类别", "agent_answered": "坐席已接听",
        "emergency_overflow": "紧急来电转上级", "controller_fallback": "控制器故障，由交换机兜底受理",
    },
    "outcome": {outcome.value: outcome.label for outcome in CallOutcome},
    "reason": {
        CallOutcome.ABANDONED_IN_QUEUE.value: CallOutcome.ABANDONED_IN_QUEUE.label,
        EMERGENCY_OVERFLOW_REASON: "紧急来电本级无坐席及时接听",
    },
    "via": {"trunk": "经中继转接上级", "callback": "请上级回电"},
    "tier": {tier.value: f"{tier.label}级" for tier in Tier},
    "transferred_to": {tier.value: f"{tier.label}级" for tier in Tier},
    "result": {
        CallbackResult.CONNECTED.value: "已接通", CallbackResult.CITIZEN_NO_ANSWER.value: "来电人未接",
        CallbackResult.AGENT_NO_ANSWER.value: "坐席未接", CallbackResult.FAILED.value: "交换机未能外呼",
        CallbackResult.EXPIRED.value: "保留时限内无空闲坐席",
    },
    "requested_by": {"controller_fallback": "交换机兜底（控制器故障）"},
    "agi_status": {"SUCCESS": "控制器中途断开或拒绝来电", "FAILURE": "无法连接控制器"},
    "caller_flags": {"no_caller_id": "未显示号码", "malformed": "号码格式无效"},
    "phase": {phase.value: phase.label for phase in Phase},
    CASE_KIND_KEY: {"emergency": "紧急", "cross_region": "跨区域", "simple": "简易"},
})

# Lists whose items follow each other; the items of other lists are listed with 、.
_SEQUENCE_KEYS = frozenset({"path"})


def _describe_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list):
        separator = "→" if key in _SEQUENCE_KEYS else "、"
        return separator.join(_describe_value(key, item) for item in value) if value else "无"
    if isinstance(value, dict):
        return _describe_mapping(key, value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return _PAYLOAD_VALUES.get(key, {}).get(value, value)
        if moment.tzinfo is not None:
            return _local(moment)
        return value
    return str(value)


def _describe_mapping(key: str, value: dict[object, object]) -> str:
    """Render a nested payload object: an extension's amounts per clock unit, or collected fields."""
    if not value:
        return "无"
    if key == "extra":
        units = {unit.value: unit.label for unit in ClockUnit}
        return "、".join(f"{amount} {units.get(str(unit), str(unit))}" for unit, amount in value.items())
    return "，".join(f"{name}={_describe_value(str(name), item)}" for name, item in value.items())


def _payload_items(payload: dict[str, object]) -> list[str]:
    """Render an event payload as Chinese "label：value" items, times in Beijing time.

    A key without a label and a value without a Chinese word are shown as stored.
    """
    items = []
    for key, value in payload.items():
        if value in (None, "", [], {}):
            continue
        if key == "flow_version" and isinstance(value, str):
            value = value[:12]
        items.append(f"{_PAYLOAD_LABELS.get(key, key)}：{_describe_value(key, value)}")
    return items


def _describe_payload(payload: dict[str, object]) -> str:
    """Render an event payload as one line of Chinese "label：value" pairs."""
    return "；".join(_payload_items(payload))


def _event_details(event: TicketEvent) -> list[str]:
    details = []
    if event.reason:
        details.append(f"原因：{reason_label(event.reason)}")
    if event.note:
        details.append(f"备注：{event.note}")
    return details + _payload_items(event.payload or {})


def _keep_values_whole(items: list[str], width: int) -> str:
    """Join detail items one per line, moving a value to its own line when "label：value" is wider than ``width``.

    A value on its own line is folded only when it alone is wider than ``width``, as a SHA-256 may be.
    """
    lines: list[str] = []
    for item in items:
        label, colon, value = item.partition("：")
        if colon and cell_len(item) > width:
            lines.extend((label + colon, value))
        else:
            lines.append(item)
    return "\n".join(lines)


def render_event_trail(title: str, events: list[TicketEvent], width: int) -> Table:
    """Build the event table of ``tickets show`` within ``width`` columns, with ids and times whole."""
    details = [_event_details(event) for event in events]
    rows = []
    for event, items in zip(events, details):
        # The event, its state change and who acted share one column, so the details get the most room.
        lines = [event_kind_label(event.kind), _state_change(event), f"{event.actor} {_who(event)}"]
        rows.append([str(event.seq), _local(event.occurred_at), "\n".join(line for line in lines if line),
                     "\n".join(items)])

    # The operator id in the middle column stays whole; the tier and office after it may wrap.
    widest_actor = max((cell_len(event.actor) for event in events), default=0)
    columns = [
        FitColumn("序号", whole=True, justify="right"),
        FitColumn("时间（北京时间）", whole=True),
        FitColumn("事件和操作人", min_width=max(widest_actor, 14)),
        FitColumn("详情"),
    ]
    visible, widths = fit_columns(columns, rows, width)
    detail_width = widths[visible.index(len(columns) - 1)]
    for row, items in zip(rows, details):
        row[-1] = _keep_values_whole(items, detail_width)
    return fit_table(title, columns, rows, width)


async def _show(config_path: Path, ticket_id: str, width: int) -> list[RenderableType]:
    config = load_node_config(config_path)
    async with await _open_store(config) as store:
        ticket = await store.get_ticket(ticket_id)
        events = await store.list_events(ticket_id)
        links = await store.list_links(ticket_id)

    # The event trail, oldest first.
    title = f"工单 {ticket.ticket_id}（{ticket.category.label}，当前状态：{ticket.state.label}）"
    output: list[RenderableType] = [render_event_trail(title, events, width)]

    # Links to merged or escalated tickets, in both directions.
    for link in links:
        if link.ticket_id == ticket.ticket_id:
            output.append(f"关联：本工单{LINK_LABELS.get(link.kind, link.kind)} {link.linked_ticket_id}（第 {link.seq} 号事件）")
        else:
            output.append(f"关联：工单 {link.ticket_id} {LINK_LABELS.get(link.kind, link.kind)}本工单")

    # What an operator can do next; a parent tier only stores copies of its children's tickets.
    if ticket.origin_node != config.node_id:
        output.append(f"本工单由节点 {ticket.origin_node} 受理，本节点只保存副本，办理操作须在该节点执行。")
    else:
        rules = allowed_actions(ticket.state)
        if rules:
            # Spaces between the actions let a narrow console wrap between them, never inside an action code.
            output.append("可执行的操作：" + "  ".join(f"{rule.name}（{rule.label}）" for rule in rules))
        else:
            output.append(f"「{ticket.state.label}」是终结状态，不能再执行任何操作。")
    return output


async def _transition(
    config_path: Path,
    ticket_id: str,
    action: str,
    operator: str,
    reason: str | None,
    note: str | None,
    office: str | None,
    target: str | None,
) -> str:
    config = load_node_config(config_path)

    # 提级 without a target requests the parent node to open its own linked ticket.
    payload: dict[str, object] = {}
    if action == "escalate" and not (target and target.strip()):
        if config.parent is None:
            raise ConfigError(
                f"节点 {config.node_id} 没有配置上级节点 parent，无法提级；如上级工单已存在，请用 --target 填写其工单号"
            )
        payload[ESCALATE_TO_KEY] = config.parent.node_id

    async with await _open_store(config) as store:
        event = await store.apply_action(
            ticket_id, action, operator, reason=reason, note=note, office=office, target_ticket_id=target,
            payload=payload,
        )

    rule = ACTIONS[action]
    if event.to_state is None:
        state = event.from_state.label if event.from_state else ""
        return f"工单 {ticket_id}：已记录{rule.label}，状态仍为「{state}」（第 {event.seq} 号事件，操作人 {operator}）。"
    previous = event.from_state.label if event.from_state else ""
    message = (
        f"工单 {ticket_id}：{previous} → {event.to_state.label}"
        f"（{rule.label}，第 {event.seq} 号事件，操作人 {operator}）。"
    )
    if ESCALATE_TO_KEY in payload:
        message += f"上级节点 {payload[ESCALATE_TO_KEY]} 收到后会新建关联工单，其工单号随后记入本工单的办理轨迹。"
    return message


async def _instruct(
    config_path: Path, ticket_id: str, child: str, kind: str, operator: str,
    office: str | None, reason: str | None, note: str | None,
) -> str:
    config = load_node_config(config_path)
    if config.broker is None:
        raise ConfigError(f"节点 {config.node_id} 没有本级 MQTT 服务 broker，没有下级可以接收指令")
    async with await _open_store(config) as store:
        ticket = await store.get_ticket(ticket_id)
        if ticket.origin_node != child:
            # NOTE: instructions reach direct children only; a grandchild's ticket is not relayed.
            raise InvalidInstruction(
                f"工单 {ticket_id} 由节点 {ticket.origin_node} 受理，不是 {child}；指令只能发给受理该工单的直属下级节点，"
                f"请把 --to 改为 {ticket.origin_node}（须为本级的直属下级）"
            )
        instruction = await issue_instruction(
            store, child, ticket_id, kind, operator, office=office, reason=reason, note=note,
        )
    return (
        f"已向下级节点 {child} 下达「{INSTRUCTION_KINDS[kind]}」指令 {instruction.instruction_id}（工单 {ticket_id}）。"
        f"本节点的同步进程会把它发给下级，下级执行后的办理轨迹会随上报同步回来。"
    )


def _describe_actions() -> list[RenderableType]:
    table = Table(title="工单操作")
    for column in ("操作", "名称", "适用状态", "结果状态", "必填项"):
        table.add_column(column)
    for rule in ACTIONS.values():
        states = "、".join(state.label for state in TicketState if state in rule.from_states)
        result = rule.to_state.label if rule.to_state else "状态不变"
        required = "、".join(field.label for field in Field if field in rule.requires) or "无"
        table.add_row(rule.name, rule.label, states, result, required)

    reasons: list[RenderableType] = [table]
    for title, codes in (("退回（return）原因代码", RETURN_REASONS), ("撤销（cancel）原因代码", CANCEL_REASONS)):
        reason_table = Table(title=title)
        reason_table.add_column("代码")
        reason_table.add_column("含义")
        for code, label in codes.items():
            reason_table.add_row(code, label)
        reasons.append(reason_table)
    return reasons


@click.group(help="查看和办理本节点的工单。")
def tickets() -> None:
    # Only warnings and errors go to stderr, so stdout contains only the operator's output.
    configure_logging("WARNING")


@tickets.command(
    "list",
    help="列出本节点保存的工单（本节点受理的和下级上报的），最新受理的在前。"
    "退出码：0 成功；2 选项值、配置文件或数据库无法使用。",
)
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件。")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 100000),
              help="最多列出多少张（最近受理的）；标题给出符合条件的总数。")
@click.option("--state", "state_values", multiple=True,
              help="只列出这些状态的工单，填中文名或代码，例如 派单 或 dispatched；可重复，或用逗号分隔多个。")
@click.option("--since", "since_text", default=None, help="只列出这一天（北京时间，YYYY-MM-DD）及以后受理的工单。")
@click.option("--category", "category_text", default=None, help="只列出这一类别的工单，填中文名或代码，例如 低保 或 dibao。")
def list_command(
    config_path: Path, limit: int, state_values: tuple[str, ...], since_text: str | None, category_text: str | None,
) -> None:
    try:
        filters = ListFilter(parse_states(state_values), parse_category(category_text), parse_since(since_text))
    except click.BadParameter as exc:
        # The list of valid values is long, so rich wraps it to the console width.
        operator_console(stderr=True).print(f"无法列出工单：{exc.message}", markup=False, highlight=False)
        sys.exit(2)

    try:
        page = asyncio.run(_list(config_path, limit, filters))
    except (ConfigError, StorageError) as exc:
        click.echo(f"无法读取工单：{exc}", err=True)
        sys.exit(2)
    console = operator_console()
    console.print(render_ticket_list(page, console.width))


@tickets.command("show", help="显示一张工单的全部事件（办理轨迹）、关联工单和下一步可执行的操作。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件。")
@click.argument("ticket_id", metavar="工单号")
def show_command(config_path: Path, ticket_id: str) -> None:
    console = operator_console()
    try:
        output = asyncio.run(_show(config_path, ticket_id, console.width))
    except TicketNotFound:
        click.echo(f"找不到工单 {ticket_id}，请用 hotline tickets list 查看已有的工单号。", err=True)
        sys.exit(1)
    except (ConfigError, StorageError) as exc:
        click.echo(f"无法读取工单：{exc}", err=True)
        sys.exit(2)
    for item in output:
        console.print(item)


@tickets.command(
    "transition",
    help="对本节点受理的工单执行一个办理操作（派单、签收、退回、办结、催办等），并打印新的状态。"
    "操作名和原因代码见 hotline tickets actions。",
)
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件。")
@click.argument("ticket_id", metavar="工单号")
@click.argument("action", metavar="操作")
@click.option("--operator", required=True, help="操作人（坐席工号或账号），记入办理轨迹。")
@click.option("--reason", default=None, help="原因代码，退回（return）和撤销（cancel）必填。")
@click.option("--note", default=None, help="备注，例如办理结果；挂起、办结、重办和督办必填。")
@click.option("--office", default=None, help="操作人所在部门；督办（supervise）时填督办部门，必填。")
@click.option("--target", default=None, help="关联工单号：并单（merge）时为并入的工单，提级（escalate）时为上级工单。")
def transition_command(
    config_path: Path,
    ticket_id: str,
    action: str,
    operator: str,
    reason: str | None,
    note: str | None,
    office: str | None,
    target: str | None,
) -> None:
    if not operator.strip():
        click.echo("操作未执行：--operator 不能为空，请填写坐席工号或账号。", err=True)
        sys.exit(1)

    try:
        message = asyncio.run(_transition(config_path, ticket_id, action, operator, reason, note, office, target))
    except TransitionRejected as exc:
        click.echo(f"操作未执行：{exc}", err=True)
        sys.exit(1)
    except TicketNotFound as exc:
        click.echo(f"操作未执行：找不到工单 {exc.ticket_id}，请用 hotline tickets list 查看已有的工单号。", err=True)
        sys.exit(1)
    except TicketConflict:
        click.echo(
            f"操作未执行：工单 {ticket_id} 不是本节点受理的，本节点只保存副本，请在受理它的节点上办理。", err=True
        )
        sys.exit(1)
    except StorageBusy:
        click.echo("操作未执行：数据库正被其他程序长时间占用，请稍后重试。", err=True)
        sys.exit(2)
    except (ConfigError, StorageError) as exc:
        click.echo(f"操作未执行：{exc}", err=True)
        sys.exit(2)
    click.echo(message)


@tickets.command("actions", help="列出全部工单操作、适用的状态、必填项和原因代码。")
def actions_command() -> None:
    console = operator_console()
    for item in _describe_actions():
        console.print(item)


@tickets.command(
    "instruct",
    short_help="向下级节点下达工单指令：派单、退回、督办或政策通知。",
    help="向下级节点下达关于其工单的指令：assign（派单）、return（退回下级办理）、supervise（督办）、"
    "policy_notice（政策通知）。指令经本级 MQTT 服务送达，下级执行后回执。",
)
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="本节点（上级）的配置文件。")
@click.argument("ticket_id", metavar="工单号")
@click.option("--to", "child", required=True, help="接收指令的下级节点编号，即受理该工单的节点，例如 county-330106。")
@click.option("--kind", required=True, type=click.Choice(["assign", "return", "supervise", "policy_notice"]),
              help="指令类型。")
@click.option("--operator", required=True, help="下达指令的操作人（工号或账号），记入下级的办理轨迹。")
@click.option("--office", default=None, help="派单（assign）时为承办部门，必填；督办时为督办部门。")
@click.option("--reason", default=None, help="退回下级办理（return）时的原因。")
@click.option("--note", default=None, help="说明；退回、督办和政策通知必填。")
def instruct_command(
    config_path: Path, ticket_id: str, child: str, kind: str, operator: str,
    office: str | None, reason: str | None, note: str | None,
) -> None:
    if not operator.strip():
        click.echo("指令未下达：--operator 不能为空，请填写工号或账号。", err=True)
        sys.exit(1)
    try:
        message = asyncio.run(_instruct(config_path, ticket_id, child, kind, operator, office, reason, note))
    except (InvalidInstruction, ValueError) as exc:
        click.echo(f"指令未下达：{exc}", err=True)
        sys.exit(1)
    except TicketNotFound:
        click.echo(f"指令未下达：本节点没有工单 {ticket_id}，请用 hotline tickets list 查看下级上报的工单号。", err=True)
        sys.exit(1)
    except (ConfigError, StorageError) as exc:
        click.echo(f"指令未下达：{exc}", err=True)
        sys.exit(2)
    click.echo(message)
