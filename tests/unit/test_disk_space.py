"""Unit tests for the free-space checks, the SQLITE_FULL mapping and the start-up refusal of ``hotline run``."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hotline.commands.run import run
from hotline.disk_space import (
    DiskGuard,
    DiskSpace,
    DiskSpaceLow,
    check_free_space,
    read_disk_space,
)
from storage.errors import (
    StorageBusy,
    StorageError,
    StorageFull,
    is_storage_full,
    storage_error_from_sqlite,
)

MB = 1024 * 1024


def sqlite_full_error(path: Path) -> sqlite3.OperationalError:
    """Fill a real database capped by max_page_count and return the error SQLite raises."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE filler (data BLOB)")
        connection.execute("PRAGMA max_page_count = 8")
        with pytest.raises(sqlite3.OperationalError) as raised:
            for _ in range(100):
                connection.execute("INSERT INTO filler VALUES (zeroblob(4096))")
        return raised.value
    finally:
        connection.close()


class TestStorageFullMapping:
    def test_sqlite_full_recognised(self, tmp_path: Path) -> None:
        error = sqlite_full_error(tmp_path / "full.db")

        assert error.sqlite_errorcode == sqlite3.SQLITE_FULL
        assert is_storage_full(error)

    def test_wrapped_error_recognised(self, tmp_path: Path) -> None:
        error = sqlite_full_error(tmp_path / "full.db")
        try:
            raise StorageError("open ticket failed") from error
        except StorageError as wrapped:
            assert is_storage_full(wrapped)

    def test_mapped_to_storage_full(self, tmp_path: Path) -> None:
        mapped = storage_error_from_sqlite(sqlite_full_error(tmp_path / "full.db"), "open ticket failed")

        assert isinstance(mapped, StorageFull)
        assert str(mapped) == "open ticket failed"

    def test_enospc_recognised(self) -> None:
        assert is_storage_full(OSError(28, "No space left on device"))

    def test_other_errors_not_full(self, tmp_path: Path) -> None:
        connection = sqlite3.connect(tmp_path / "ok.db")
        with pytest.raises(sqlite3.OperationalError) as raised:
            connection.execute("SELECT * FROM missing_table")
        connection.close()

        assert not is_storage_full(raised.value)
        assert type(storage_error_from_sqlite(raised.value, "read")) is StorageError

    def test_locked_mapped_to_busy(self, tmp_path: Path) -> None:
        first = sqlite3.connect(tmp_path / "busy.db", timeout=0, isolation_level=None)
        second = sqlite3.connect(tmp_path / "busy.db", timeout=0, isolation_level=None)
        first.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as raised:
            second.execute("BEGIN IMMEDIATE")
        first.close()
        second.close()

        assert isinstance(storage_error_from_sqlite(raised.value, "write"), StorageBusy)


class TestFreeSpace:
    def test_real_disk_measured(self, tmp_path: Path) -> None:
        space = read_disk_space(tmp_path / "county.sqlite3")

        assert space.folder == tmp_path.resolve()
        assert 0 < space.free_bytes <= space.total_bytes

    def test_missing_folder_measures_ancestor(self, tmp_path: Path) -> None:
        space = read_disk_space(tmp_path / "not" / "yet" / "county.sqlite3")

        assert space.folder == tmp_path.resolve()

    def test_enough_space_passes(self, tmp_path: Path) -> None:
        assert check_free_space(tmp_path / "county.sqlite3", 0).free_bytes > 0

    def test_too_little_space_explained(self, tmp_path: Path) -> None:
        space = read_disk_space(tmp_path / "county.sqlite3")

        with pytest.raises(DiskSpaceLow) as raised:
            check_free_space(tmp_path / "county.sqlite3", space.total_bytes + MB)

        message = str(raised.value)
        assert str(tmp_path.resolve()) in message
        assert "磁盘空间不足" in message
        assert "请清理" in message


class FakeDisk:
    """A disk whose free space the test sets; the guard reads it through ``space_reader``."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes

    def read(self, database: Path) -> DiskSpace:
        return DiskSpace(database.parent, self.free_bytes, 100 * MB)


class TestDiskGuard:
    def test_low_space_refuses_and_reports_once(self, tmp_path: Path) -> None:
        disk = FakeDisk(free_bytes=MB)
        output = io.StringIO()
        guard = DiskGuard(tmp_path / "county.sqlite3", 10 * MB, stderr=output, space_reader=disk.read)

        first = guard.call_allowed("call-1")
        second = guard.call_allowed("call-2")

        assert not first
        assert not second
        assert guard.calls_rejected == 2
        assert output.getvalue().count("磁盘空间不足") == 1

    def test_recovery_allows_calls_and_reports(self, tmp_path: Path) -> None:
        disk = FakeDisk(free_bytes=MB)
        output = io.StringIO()
        guard = DiskGuard(tmp_path / "county.sqlite3", 10 * MB, stderr=output, space_reader=disk.read)
        guard.call_allowed("call-1")

        disk.free_bytes = 50 * MB
        allowed = guard.call_allowed("call-2")

        assert allowed
        assert guard.calls_rejected == 0
        assert "已恢复" in output.getvalue()

    def test_enough_space_is_silent(self, tmp_path: Path) -> None:
        output = io.StringIO()
        guard = DiskGuard(tmp_path / "county.sqlite3", 10 * MB, stderr=output, space_reader=FakeDisk(50 * MB).read)

        assert guard.call_allowed("call-1")
        assert output.getvalue() == ""

    def test_full_disk_write_reported_once(self, tmp_path: Path) -> None:
        output = io.StringIO()
        guard = DiskGuard(tmp_path / "county.sqlite3", 10 * MB, stderr=output, space_reader=FakeDisk(0).read)
        error = sqlite_full_error(tmp_path / "full.db")

        first = guard.storage_failed(error, "open ticket", call_id="call-1")
        second = guard.storage_failed(error, "open ticket", call_id="call-2")

        assert first
        assert second
        assert output.getvalue().count("SQLITE_FULL") == 1
        assert str(tmp_path.resolve()) in output.getvalue()

    def test_other_storage_error_not_reported(self, tmp_path: Path) -> None:
        output = io.StringIO()
        guard = DiskGuard(tmp_path / "county.sqlite3", 10 * MB, stderr=output)

        assert not guard.storage_failed(StorageError("locked"), "open ticket")
        assert output.getvalue() == ""


def write_city_config(tmp_path: Path) -> Path:
    config = tmp_path / "city.yaml"
    config.write_text(f"""\
node_id: city-330100
tier: city
region_code: "330100"
database: {tmp_path / 'city.sqlite3'}
broker:
  port: 1883
""", encoding="utf-8")
    return config


def write_county_config(tmp_path: Path) -> Path:
    for name in ("flow.yaml", "catalog.yaml", "roster.yaml", "ami-secret"):
        (tmp_path / name).write_text("x\n", encoding="utf-8")
    config = tmp_path / "county.yaml"
    config.write_text(f"""\
node_id: county-330106
tier: county
region_code: "330106"
database: {tmp_path / 'county.sqlite3'}
parent:
  node_id: city-330100
  broker: {{port: 1883}}
telephony:
  fastagi: {{port: 4573}}
  ami: {{port: 5038, username: hotline, secret_file: {tmp_path / 'ami-secret'}}}
  flow: {tmp_path / 'flow.yaml'}
  prompt_catalog: {tmp_path / 'catalog.yaml'}
  prompt_sound_dir: /var/lib/hotline/sounds
  roster: {tmp_path / 'roster.yaml'}
""", encoding="utf-8")
    return config


class TestRunStartUp:
    def test_refuses_with_too_little_space(self, tmp_path: Path) -> None:
        config = write_city_config(tmp_path)
        required_mb = read_disk_space(tmp_path / "city.sqlite3").total_bytes // MB + 1

        result = CliRunner().invoke(run, ["--config", str(config), "--min-free-mb", str(required_mb)])

        assert result.exit_code == 5
        assert "启动失败" in result.output
        assert "磁盘空间不足" in result.output
        assert str(tmp_path.resolve()) in result.output
        assert not (tmp_path / "city.sqlite3").exists()

    def test_standby_needs_standby_listener(self, tmp_path: Path) -> None:
        config = write_county_config(tmp_path)

        result = CliRunner().invoke(run, ["--config", str(config), "--standby"])

        assert result.exit_code == 2
        assert "telephony.standby_fastagi" in result.output

    def test_standby_only_for_county(self, tmp_path: Path) -> None:
        config = write_city_config(tmp_path)

        result = CliRunner().invoke(run, ["--config", str(config), "--standby"])

        assert result.exit_code == 2
        assert "只有县级节点" in result.output
