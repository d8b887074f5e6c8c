"""Unit tests for online backups and checked restores: storage.backup and ``hotline backup`` / ``hotline restore``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from hotline.cli import main
from storage import TicketStore
from storage.acd_store import AcdStore, acd_path
from storage.backup import (
    ACD,
    TICKETS,
    BackupError,
    create_backup,
    read_manifest,
    restore_backup,
    verify_backup,
)
from storage.schema import LATEST_VERSION
from tickets.model import TicketCategory
from tier_sync.node_lock import NodeLock

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
BACKUP_AT = datetime(2026, 12, 4, 3, 0, tzinfo=timezone.utc)
COUNTY = "county-330106"


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Undo the CLI's logging configuration, which points at the runner's temporary stderr."""
    yield
    structlog.reset_defaults()


def write_config(folder: Path) -> Path:
    path = folder / f"{COUNTY}.yaml"
    path.write_text(
        f"node_id: {COUNTY}\ntier: county\nregion_code: '330106'\ndatabase: {folder / 'county.db'}\n"
        "parent:\n  node_id: city-330100\n  broker: {port: 18830}\n"
        "telephony:\n  fastagi: {port: 0}\n"
        f"  ami: {{port: 5038, username: hotline, secret_file: {folder / 'ami.secret'}}}\n"
        "  flow: flows/main.yaml\n  prompt_catalog: prompts/catalog.yaml\n"
        "  prompt_sound_dir: /var/lib/asterisk/sounds/hotline\n  roster: roster.yaml\n",
        encoding="utf-8",
    )
    return path


async def fill(database: Path, count: int, *, attachment: bytes | None = None) -> list[str]:
    async with await TicketStore.open(database, COUNTY, "330106") as store:
        ids = [(await store.open_ticket(None, TicketCategory.LINSHI, "139****0001", AT, "ivr", {})).ticket_id
               for _ in range(count)]
        if attachment is not None:
            await store.add_attachment(ids[0], attachment, "image/jpeg", "agent-1001", occurred_at=AT)
    acd = await AcdStore.open(acd_path(database))
    await acd.close()
    return ids


def ticket_ids(database: Path) -> list[str]:
    connection = sqlite3.connect(database)
    try:
        return [row[0] for row in connection.execute("SELECT ticket_id FROM tickets ORDER BY ticket_id")]
    finally:
        connection.close()


def databases(folder: Path) -> dict[str, Path]:
    return {TICKETS: folder / "county.db", ACD: acd_path(folder / "county.db")}


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


class TestBackup:
    def test_backup_holds_every_database_attachment_and_manifest(self, tmp_path: Path) -> None:
        ids = asyncio.run(fill(tmp_path / "county.db", 3, attachment=b"\xff\xd8photo"))

        manifest = create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)

        assert manifest.folder == tmp_path / "backups" / f"{COUNTY}-20261204T030000Z"
        assert [item.kind for item in manifest.files] == [TICKETS, ACD]
        assert manifest.files[0].schema_version == LATEST_VERSION
        assert manifest.files[0].attachments == 1
        assert ticket_ids(manifest.folder / "tickets.sqlite3") == ids
        assert not (manifest.folder / "tickets.sqlite3-wal").exists()
        assert read_manifest(manifest.folder) == manifest

    async def test_backup_while_the_store_keeps_writing(self, tmp_path: Path) -> None:
        async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as store:
            await store.open_ticket(None, TicketCategory.LINSHI, "139****0001", AT, "ivr", {})

            async def keep_writing() -> int:
                written = 0
                while not backup_task.done():
                    await asyncio.gather(*(store.open_ticket(None, TicketCategory.LINSHI, "139****0001", AT, "ivr", {})
                                           for _ in range(5)))
                    written += 5
                return written

            backup_task = asyncio.create_task(asyncio.to_thread(
                create_backup, COUNTY, {TICKETS: tmp_path / "county.db"}, tmp_path / "backups", now=BACKUP_AT,
            ))
            written = await keep_writing()
            manifest = await backup_task

        copy = sqlite3.connect(manifest.folder / "tickets.sqlite3")
        counts = [copy.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("tickets", "ticket_events", "outbox")]
        copy.close()
        assert written > 0
        assert counts[0] == counts[1] == counts[2] >= 1, "the copy is not one consistent snapshot"

    def test_missing_ticket_database_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(BackupError, match="工单数据库 .* 不存在"):
            create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)
        assert not (tmp_path / "backups" / f"{COUNTY}-20261204T030000Z").exists()


class TestRestore:
    def test_restore_keeps_replaced_file(self, tmp_path: Path) -> None:
        ids = asyncio.run(fill(tmp_path / "county.db", 2, attachment=b"\xff\xd8photo"))
        manifest = create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)
        asyncio.run(fill(tmp_path / "county.db", 3))
        attachments = tmp_path / "county.db.attachments"
        for path in attachments.rglob("*"):
            if path.is_file():
                path.unlink()

        restored = restore_backup(manifest.folder, COUNTY, databases(tmp_path), now=BACKUP_AT)

        assert ticket_ids(tmp_path / "county.db") == ids
        assert restored[0].kept_as == tmp_path / "county.db.before-restore-20261204T030000Z"
        assert len(ticket_ids(restored[0].kept_as)) == 5
        assert restored[0].attachments_copied == 1
        # The restored file opens as a store and its attachment is there.
        async def check() -> None:
            async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as store:
                assert await store.check_integrity() == "ok"
                events = await store.list_events(ids[0])
                await store.attachment_path(events[-1].payload["attachment_id"])
        asyncio.run(check())

    def test_restore_keeps_ticket_numbers_unique(self, tmp_path: Path) -> None:
        asyncio.run(fill(tmp_path / "county.db", 2))
        manifest = create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)
        asyncio.run(fill(tmp_path / "county.db", 3))

        restored = restore_backup(manifest.folder, COUNTY, databases(tmp_path), now=BACKUP_AT)

        assert restored[0].numbers_carried is True
        assert asyncio.run(fill(tmp_path / "county.db", 1)) == ["330106-20261204-0006"]

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        asyncio.run(fill(tmp_path / "county.db", 1))
        manifest = create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)
        copy = manifest.folder / "tickets.sqlite3"
        connection = sqlite3.connect(copy)
        connection.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
        connection.close()
        rewrite_hash(manifest.folder, copy)

        with pytest.raises(BackupError, match=f"结构版本为 {LATEST_VERSION + 1}，比本软件支持的 {LATEST_VERSION} 新"):
            restore_backup(manifest.folder, COUNTY, databases(tmp_path))

    def test_changed_or_corrupt_file_is_refused(self, tmp_path: Path) -> None:
        asyncio.run(fill(tmp_path / "county.db", 20))
        manifest = create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)
        copy = manifest.folder / "tickets.sqlite3"
        data = bytearray(copy.read_bytes())
        data[8192:12288] = b"\xab" * 4096
        copy.write_bytes(bytes(data))

        with pytest.raises(BackupError, match="校验值不符"):
            verify_backup(manifest.folder)
        rewrite_hash(manifest.folder, copy)
        with pytest.raises(BackupError, match="完整性检查未通过|不是可用的 SQLite 数据库"):
            verify_backup(manifest.folder)
        assert len(ticket_ids(tmp_path / "county.db")) == 20

    def test_backup_of_another_node_is_refused(self, tmp_path: Path) -> None:
        asyncio.run(fill(tmp_path / "county.db", 1))
        manifest = create_backup(COUNTY, databases(tmp_path), tmp_path / "backups", now=BACKUP_AT)

        with pytest.raises(BackupError, match="属于节点 county-330106，不是本配置的节点 county-330108"):
            restore_backup(manifest.folder, "county-330108", databases(tmp_path))


def rewrite_hash(folder: Path, copy: Path) -> None:
    import hashlib

    manifest_path = folder / "manifest.json"
    content = json.loads(manifest_path.read_text(encoding="utf-8"))
    content["files"][0]["sha256"] = hashlib.sha256(copy.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(content), encoding="utf-8")


class TestCli:
    def test_backup_then_restore(self, tmp_path: Path) -> None:
        config = write_config(tmp_path)
        ids = asyncio.run(fill(tmp_path / "county.db", 2))

        made = run("backup", "--config", str(config), "--to", str(tmp_path / "backups"))
        assert made.exit_code == 0, made.output
        assert "备份完成" in made.output
        assert "工单数据库 tickets.sqlite3：结构版本" in made.output
        folder = next((tmp_path / "backups").iterdir())

        checked = run("restore", "--config", str(config), "--check-only", str(folder))
        assert checked.exit_code == 0, checked.output
        assert "备份检查通过" in checked.output

        asyncio.run(fill(tmp_path / "county.db", 1))
        restored = run("restore", "--config", str(config), str(folder))
        assert restored.exit_code == 0, restored.output
        assert "恢复完成" in restored.output
        assert "原文件保留为" in restored.output
        assert ticket_ids(tmp_path / "county.db") == ids

    @pytest.mark.parametrize("role", ["publisher", "receiver"])
    def test_restore_over_a_running_node_is_refused(self, tmp_path: Path, role: str) -> None:
        config = write_config(tmp_path)
        asyncio.run(fill(tmp_path / "county.db", 2))
        assert run("backup", "--config", str(config), "--to", str(tmp_path / "backups")).exit_code == 0
        folder = next((tmp_path / "backups").iterdir())
        asyncio.run(fill(tmp_path / "county.db", 1))

        running = NodeLock(tmp_path / "county.db", role, COUNTY)
        running.acquire()
        try:
            refused = run("restore", "--config", str(config), str(folder))
        finally:
            running.release()

        assert refused.exit_code == 1
        assert f"节点 {COUNTY} 正在运行" in refused.output
        assert "请先停止该节点" in refused.output
        assert len(ticket_ids(tmp_path / "county.db")) == 3

    def test_folder_that_is_not_a_backup(self, tmp_path: Path) -> None:
        config = write_config(tmp_path)
        asyncio.run(fill(tmp_path / "county.db", 1))

        result = run("restore", "--config", str(config), str(tmp_path))

        assert result.exit_code == 1
        assert "没有 manifest.json，不是 hotline backup 生成的备份目录" in result.output
