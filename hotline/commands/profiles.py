"""CLI: ``hotline profiles`` manages citizen profiles: keys, import, lookup, audited reads, operators, rotation.

Exit codes: 0 on success, 1 when the request is rejected (bad rows skipped in an import,
access denied, number invalid, nothing found), 2 when the configuration, a key file, the
import file or the database cannot be used.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hotline.config import ConfigError, NodeConfig, load_node_config
from profiles.access import (
    OPERATOR_NAME_RE,
    AccessDenied,
    Operator,
    OperatorRole,
    expected_tier,
)
from profiles.config import ProfilesConfig, load_profiles_config
from profiles.importer import ImportFileError, RowValidator, plan_import, read_rows
from profiles.keys import (
    DecryptionFailed,
    KeyFileError,
    add_active_key,
    add_lookup_key,
    generate_key_files,
    load_keys,
    retire_keys,
    retire_lookup_keys,
)
from profiles.model import ProfileSummary, mask_id_number_for_agent
from profiles.phone import PhoneNumber, PhoneNumberError, normalise_phone
from profiles.sealing import SealedValueError
from regions.divisions import RegionCodeError, default_division_table
from storage.errors import StorageError, TicketNotFound
from storage.profile_store import AccessLogEntry, AgentScreen, LookupKeyState, ProfileStore
from storage.ticket_store import TicketStore

CHINA = ZoneInfo("Asia/Shanghai")
T = TypeVar("T")
CONFIG_OPTION = click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
                             help="档案库配置文件（YAML：database、encryption_key_file、lookup_key_file）。")

console = Console(soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int) -> NoReturn:
    error_console.print(message, markup=False)
    sys.exit(code)


def _load(config_path: Path) -> ProfilesConfig:
    try:
        return load_profiles_config(config_path)
    except ConfigError as error:
        _fail(str(error), 2)


async def _open(config: ProfilesConfig) -> ProfileStore:
    keys = load_keys(config.encryption_key_file, config.lookup_key_file)
    return await ProfileStore.open(config.database, keys)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one command body; a key, file or storage failure exits 2 with its message."""
    try:
        return asyncio.run(coroutine)
    except (KeyFileError, ImportFileError) as error:
        _fail(str(error), 2)
    except StorageError as error:
        _fail(f"档案库无法使用：{error}", 2)


@click.group(help="民政档案：密钥、导入、按来电号码查询、经审计的完整查看、操作员账号和密钥轮换。")
def profiles() -> None:
    pass


@profiles.command(help="生成加密密钥文件和查询密钥文件（权限 0600），已存在时不覆盖。")
@CONFIG_OPTION
def keygen(config_path: Path) -> None:
    config = _load(config_path)
    try:
        key_id = generate_key_files(config.encryption_key_file, config.lookup_key_file, now=datetime.now(UTC))
    except (KeyFileError, OSError) as error:
        _fail(f"生成密钥失败：{error}", 2)
    console.print(f"已生成加密密钥 {key_id}：{config.encryption_key_file}；查询密钥：{config.lookup_key_file}。"
                  "请把两个文件分别备份到安全位置，丢失后档案无法解密。", markup=False)


@profiles.command(name="import", help="从 CSV 或 JSON 导入档案；有误的行跳过并逐行列出，其余行在一个事务中写入。")
@click.argument("file", metavar="导入文件", type=click.Path(path_type=Path))
@CONFIG_OPTION
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="把错误报告另存到此文件（UTF-8 文本）。")
def import_(file: Path, config_path: Path, report_path: Path | None) -> None:
    config = _load(config_path)
    sys.exit(_run(_import(config, file, report_path)))


async def _import(config: ProfilesConfig, file: Path, report_path: Path | None) -> int:
    today = datetime.now(CHINA).date()
    validator = RowValidator(default_division_table(), today, config.default_area_code)
    async with await _open(config) as store:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=error_console) as progress:
            checking = progress.add_task("校验", total=None)
            plan = plan_import(read_rows(file), validator, lambda count: progress.advance(checking, count))
            progress.update(checking, total=plan.total_rows)
            writing = progress.add_task("写入", total=len(plan.valid))
            result = await store.upsert_profiles([row.profile for row in plan.valid],
                                                 progress=lambda count: progress.advance(writing, count))

    lines = [error.render() for error in plan.errors]
    if report_path is not None:
        report_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for line in lines:
        console.print(line, markup=False)
    upgraded = sum(1 for row in plan.valid if row.upgraded_id)
    console.print(
        f"共 {plan.total_rows} 行：新增 {result.inserted} 份，更新 {result.updated} 份，"
        f"跳过有误的 {plan.skipped_rows} 行（共 {len(plan.errors)} 处错误）；其中 {upgraded} 个 15 位身份证号已升为 18 位。",
        markup=False,
    )
    if plan.errors:
        console.print("请按上面每行的提示改正后，只导入改正的行即可；已导入的行再次导入会更新而不会重复。", markup=False)
        return 1
    return 0


def _phone_or_fail(number: str, config: ProfilesConfig) -> PhoneNumber:
    try:
        return normalise_phone(number, default_area_code=config.default_area_code)
    except PhoneNumberError as error:
        _fail(f"号码无效：{error.message}", 1)


@profiles.command(help="按来电号码查询档案摘要（已脱敏），即呼叫流程和坐席分配看到的内容。")
@CONFIG_OPTION
@click.option("--phone", required=True, help="来电号码，任意格式（+86、0086、区号均可）。")
def lookup(config_path: Path, phone: str) -> None:
    config = _load(config_path)
    number = _phone_or_fail(phone, config)
    summaries = _run(_lookup(config, number))
    if not summaries:
        _fail(f"号码 {number.masked} 没有对应的档案", 1)
    table = Table(title=f"号码 {number.masked} 的档案摘要")
    for column in ("姓名", "身份证号", "电话", "住址（到县）", "当前救助", "特殊需求", "首选坐席"):
        table.add_column(column)
    for summary in summaries:
        table.add_row(summary.name_masked, summary.id_number_masked, "、".join(summary.phones_masked),
                      summary.address_masked, "、".join(status.value for status in summary.active_statuses) or "无",
                      "、".join(sorted(tag.value for tag in summary.need_tags)) or "无",
                      summary.preferred_agent or "无")
    console.print(table)


async def _lookup(config: ProfilesConfig, number: PhoneNumber) -> list[ProfileSummary]:
    async with await _open(config) as store:
        return await store.lookup_by_phone(number)


@profiles.command(help="查看完整档案：必须给出操作员和理由，每次查看都记入审计日志。")
@CONFIG_OPTION
@click.option("--phone", required=True, help="来电号码，任意格式。")
@click.option("--operator", "operator_name", required=True, help="操作员账号名。")
@click.option("--reason", required=True, help="查看理由，例如“核实来电人身份”。")
def show(config_path: Path, phone: str, operator_name: str, reason: str) -> None:
    config = _load(config_path)
    number = _phone_or_fail(phone, config)
    outcome = _run(_show(config, number, operator_name, reason))
    if isinstance(outcome, str):
        _fail(outcome, 1)


async def _show(config: ProfilesConfig, number: PhoneNumber, operator_name: str, reason: str) -> str | None:
    """Print the full profiles the operator may read; return the rejection message instead when there are none."""
    async with await _open(config) as store:
        try:
            read = await store.read_full_by_phone(number, operator_name=operator_name, reason=reason)
        except AccessDenied as error:
            return str(error)
        operator = await store.get_operator(operator_name)
        labels = {ref.profile_ref: store.county_label(ref.profile.address.region_code) for ref in read.granted}

    if not read.granted:
        if read.denied:
            return f"号码 {number.masked} 的 {read.denied} 份档案不在账号 {operator_name} 的辖区内，无权查看（已记入审计日志）"
        return f"号码 {number.masked} 没有对应的档案（查询已记入审计日志）"

    for item in read.granted:
        profile = item.profile
        id_text = profile.id_number if operator.role is OperatorRole.SUPERVISOR else mask_id_number_for_agent(profile.id_number)
        table = Table(title=f"档案 {item.profile_ref[:12]}", show_header=False)
        table.add_column("项目")
        table.add_column("内容")
        table.add_row("姓名", profile.name)
        table.add_row("身份证号", id_text)
        table.add_row("电话", "、".join(phone.national for phone in profile.phones))
        table.add_row("住址", labels[item.profile_ref] + profile.address.detail)
        table.add_row("救助记录", "；".join(
            f"{period.status.value} {period.start}～{period.end or '至今'}" for period in profile.statuses) or "无")
        table.add_row("特殊需求", "、".join(sorted(tag.value for tag in profile.need_tags)) or "无")
        if profile.contact is not None:
            contact_phone = profile.contact.phone.national if profile.contact.phone else "无"
            table.add_row("监护人/联系人", f"{profile.contact.name}（{profile.contact.relation}）{contact_phone}")
        table.add_row("帮扶记录", "；".join(f"{record.day} {record.description}" for record in profile.help_history) or "无")
        table.add_row("首选坐席", profile.preferred_agent or "无")
        console.print(table)
    if read.denied:
        console.print(f"另有 {read.denied} 份档案不在账号 {operator_name} 的辖区内，未显示。", markup=False)
    return None


@profiles.group(help="操作员账号：层级、辖区和角色。")
def operators() -> None:
    pass


@operators.command(name="add", help="登记或修改操作员账号。")
@CONFIG_OPTION
@click.argument("name", metavar="账号")
@click.option("--region", "region_code", required=True, help="辖区的 6 位区划代码：省 PP0000、市 PPCC00、县为完整代码。")
@click.option("--role", type=click.Choice([role.value for role in OperatorRole]), default="agent", show_default=True,
              help="agent 坐席（身份证号显示后 4 位）；supervisor 班长（显示完整身份证号）。")
def operators_add(config_path: Path, name: str, region_code: str, role: str) -> None:
    config = _load(config_path)
    if not OPERATOR_NAME_RE.match(name):
        _fail(f"账号名 {name} 无效：只能用 2～64 个英文字母、数字、点、下划线或短横线，例如 zhang-san", 1)
    try:
        if region_code != "000000":
            default_division_table().lookup(region_code)
    except RegionCodeError as error:
        _fail(f"区划代码 {region_code} 无效：{error}", 1)
    operator = Operator(name, expected_tier(region_code), region_code, OperatorRole(role))
    _run(_add_operator(config, operator))
    console.print(f"已保存操作员 {name}：辖区 {region_code}，角色 {OperatorRole(role).label}。", markup=False)


async def _add_operator(config: ProfilesConfig, operator: Operator) -> None:
    async with await _open(config) as store:
        await store.add_operator(operator)


@operators.command(name="list", help="列出操作员账号。")
@CONFIG_OPTION
def operators_list(config_path: Path) -> None:
    config = _load(config_path)
    accounts = _run(_list_operators(config))
    table = Table(title="操作员账号")
    for column in ("账号", "层级", "辖区", "角色"):
        table.add_column(column)
    for operator in accounts:
        table.add_row(operator.name, operator.tier.value, operator.region_code, operator.role.label)
    console.print(table)


async def _list_operators(config: ProfilesConfig) -> list[Operator]:
    async with await _open(config) as store:
        return await store.list_operators()


@profiles.command(help="查看审计日志：谁在何时、为何查看了哪份档案（档案以密钥散列标识）。")
@CONFIG_OPTION
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000), help="显示最近多少条。")
def audit(config_path: Path, limit: int) -> None:
    config = _load(config_path)
    entries = _run(_audit(config, limit))
    outcome_labels = {"granted": "已查看", "denied": "被拒绝", "not_found": "无档案"}
    table = Table(title="档案查看审计日志")
    for column in ("序号", "时间（北京时间）", "操作员", "理由", "档案", "结果"):
        table.add_column(column)
    for entry in entries:
        table.add_row(str(entry.entry_id), entry.occurred_at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                      entry.operator, entry.reason, (entry.profile_ref or "—")[:12], outcome_labels[entry.outcome])
    console.print(table)


async def _audit(config: ProfilesConfig, limit: int) -> list[AccessLogEntry]:
    async with await _open(config) as store:
        return await store.access_log(limit=limit)


@profiles.command(name="rotate-key",
                  help="生成新的加密密钥和查询密钥，逐批重新加密全部档案，再在一个事务中重算查询散列；中断后加 --resume 继续。")
@CONFIG_OPTION
@click.option("--resume", is_flag=True, help="不生成新密钥，继续上次未完成的轮换。")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100000),
              help="每个事务重新加密的档案数。")
def rotate_key(config_path: Path, resume: bool, batch_size: int) -> None:
    config = _load(config_path)
    pending = _run(_rotation_pending(config))
    if pending and not resume:
        _fail("上次的密钥轮换尚未完成（仍有档案或查询散列使用旧密钥）；请执行 hotline profiles rotate-key "
              "--resume --config 配置文件 继续，完成后再开始新的轮换", 1)
    if not resume:
        try:
            now = datetime.now(UTC)
            key_id = add_active_key(config.encryption_key_file, now=now)
            lookup_key_id = add_lookup_key(config.lookup_key_file, now=now)
        except (KeyFileError, OSError) as error:
            _fail(f"生成新密钥失败：{error}", 2)
        console.print(f"新加密密钥 {key_id} 和新查询密钥 {lookup_key_id} 已启用。", markup=False)
    rewritten, rehashed = _run(_rotate(config, batch_size))
    console.print(f"已重新加密 {rewritten} 份档案，重算 {rehashed} 份档案的查询散列；全部档案现使用当前密钥。"
                  "旧密钥仍保留在密钥文件中，确认旧备份和旧通话记录不再需要后执行 hotline profiles retire-keys 删除。",
                  markup=False)


async def _rotation_pending(config: ProfilesConfig) -> bool:
    """Return True when rows are under an old AES key or the hashes under an old lookup key."""
    async with await _open(config) as store:
        in_use = await store.key_ids_in_use()
        stale_rows = any(key_id != store.active_key_id for key_id in in_use)
        return stale_rows or store.lookup_key_state().rotation_pending


async def _rotate(config: ProfilesConfig, batch_size: int) -> tuple[int, int]:
    async with await _open(config) as store:
        in_use = await store.key_ids_in_use()
        total = sum(count for key, count in in_use.items() if key != store.active_key_id)
        rewritten = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=error_console) as progress:
            task = progress.add_task("重新加密", total=total)
            while (count := await store.reencrypt_batch(batch_size)) > 0:
                rewritten += count
                progress.advance(task, count)

            rehash = progress.add_task("重算查询散列",
                                       total=await store.count_profiles() if store.lookup_key_state().rotation_pending
                                       else 0)
            rehashed = await store.rekey_lookup(progress=lambda count: progress.advance(rehash, count))
        return rewritten, rehashed


@profiles.command(name="retire-keys", help="从密钥文件中删除已没有档案使用的旧加密密钥。")
@CONFIG_OPTION
def retire_keys_command(config_path: Path) -> None:
    config = _load(config_path)
    try:
        keys = load_keys(config.encryption_key_file, config.lookup_key_file)
    except KeyFileError as error:
        _fail(str(error), 2)
    in_use = _run(_key_usage(config))
    in_use, lookup_state = _run(_key_usage(config))
    unused = {key for key in keys.encryption_keys if key not in in_use and key != keys.active_key_id}
    unused_lookup: set[str] = set()
    if not lookup_state.rotation_pending:
        unused_lookup = {key for key in keys.lookup_keys if key != lookup_state.database_key_id}
    if not unused and not unused_lookup:
        console.print("没有可删除的旧密钥。", markup=False)
        return
    # NOTE: call records and callback requests in the node's ticket database are sealed
    # under the AES key active when the call ended; this command cannot see them.
    try:
        if unused:
            retire_keys(config.encryption_key_file, unused)
        if unused_lookup:
            retire_lookup_keys(config.lookup_key_file, unused_lookup)
    except (KeyFileError, OSError) as error:
        _fail(f"删除旧密钥失败：{error}", 2)
    console.print(f"已删除旧密钥：{', '.join(sorted(unused | unused_lookup))}。用这些密钥加密的旧通话记录号码从此无法解密。",
                  markup=False)


async def _key_usage(config: ProfilesConfig) -> tuple[dict[str, int], LookupKeyState]:
    async with await _open(config) as store:
        return await store.key_ids_in_use(), store.lookup_key_state()


@profiles.command(help="显示坐席当前来电人的档案摘要（坐席级脱敏：身份证号只显示后 4 位），即振铃时节点写下的内容。")
@CONFIG_OPTION
@click.argument("agent_id", metavar="坐席工号")
def screen(config_path: Path, agent_id: str) -> None:
    config = _load(config_path)
    agent_screen = _run(_screen(config, agent_id))
    if agent_screen is None:
        _fail(f"坐席 {agent_id} 还没有来自已建档来电人的来电；请确认坐席工号（见 hotline acd agents）", 1)
    summary = agent_screen.summary
    table = Table(title=f"坐席 {agent_id} 的来电人档案摘要", show_header=False)
    table.add_column("项目")
    table.add_column("内容")
    table.add_row("来电", f"{agent_screen.call_id}（{agent_screen.shown_at.astimezone(CHINA):%Y-%m-%d %H:%M:%S} 振铃）")
    table.add_row("姓名", summary.name_masked)
    table.add_row("身份证号", summary.id_number_masked)
    table.add_row("电话", "、".join(summary.phones_masked))
    table.add_row("住址（到县）", summary.address_masked)
    table.add_row("当前救助", "、".join(status.value for status in summary.active_statuses) or "无")
    table.add_row("特殊需求", "、".join(sorted(tag.value for tag in summary.need_tags)) or "无")
    table.add_row("首选坐席", summary.preferred_agent or "无")
    console.print(table)


async def _screen(config: ProfilesConfig, agent_id: str) -> AgentScreen | None:
    async with await _open(config) as store:
        return await store.agent_screen(agent_id)


@profiles.command(name="callback-number",
                  help="解密工单中来电人要求回拨的号码（只能在本县节点执行），必须给出操作员和理由并记入审计日志。")
@CONFIG_OPTION
@click.argument("ticket_id", metavar="工单号")
@click.option("--node-config", "node_config_path", required=True, type=click.Path(path_type=Path),
              help="本县节点的配置文件（YAML），从中读取工单数据库。")
@click.option("--operator", "operator_name", required=True, help="操作员账号名。")
@click.option("--reason", required=True, help="查看理由，例如“按约定回拨”。")
def callback_number(config_path: Path, ticket_id: str, node_config_path: Path, operator_name: str,
                    reason: str) -> None:
    config = _load(config_path)
    try:
        node = load_node_config(node_config_path)
    except ConfigError as error:
        _fail(str(error), 2)
    outcome = _run(_callback_number(config, node, ticket_id, operator_name, reason))
    if outcome.startswith("错误："):
        _fail(outcome.removeprefix("错误："), 1)
    console.print(outcome, markup=False)


async def _callback_number(config: ProfilesConfig, node: NodeConfig, ticket_id: str, operator_name: str,
                           reason: str) -> str:
    """Return the clear callback number, or a message starting with 错误： when it cannot be given."""
    async with await TicketStore.open(node.database, node.node_id, node.region_code) as tickets:
        try:
            events = await tickets.list_events(ticket_id)
        except TicketNotFound:
            return f"错误：工单 {ticket_id} 不存在；请用 hotline tickets list 核对工单号"
    requests = [event for event in events if event.kind == "callback_requested"]
    if not requests:
        return f"错误：工单 {ticket_id} 没有回拨请求"
    payload = requests[-1].payload
    if "number_sealed" not in payload:
        return f"错误：工单 {ticket_id} 的回拨号码未加密保存，请用 hotline tickets show {ticket_id} 查看"

    async with await _open(config) as store:
        try:
            await store.authorise_call_data_read(operator_name=operator_name, reason=reason, action="callback_number")
        except AccessDenied as error:
            return f"错误：{error}"
        try:
            number = store.unseal_number(str(payload["number_sealed"]), call_id=str(payload.get("call_id")),
                                         purpose="callback")
        except (SealedValueError, DecryptionFailed):
            return (f"错误：工单 {ticket_id} 的回拨号码无法解密：加密它的密钥已不在密钥文件中，"
                    "请从备份恢复该密钥后重试")
    return f"工单 {ticket_id} 的回拨号码：{number}（本次查看已记入审计日志）"
