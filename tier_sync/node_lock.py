"""MQTT adapter: an fcntl lock that lets only one sync process per node and role run at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


class NodeAlreadyRunning(RuntimeError):
    """Another process of the same node already holds the sync lock."""


class NodeLock:
    """Exclusive, non-blocking ``flock`` on ``<database>.<role>.lock``.

    Two processes with the same MQTT client id would take over each other's session
    every few seconds, so the second one is stopped here before it connects. The lock
    is released by the kernel when the holder exits, even after ``kill -9``.
    """

    def __init__(self, database_path: Path, role: str, node_id: str) -> None:
        self.path = Path(f"{database_path}.{role}.lock")
        self.role = role
        self.node_id = node_id
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "未知"
            os.close(fd)
            log.error("sync lock held by another process", node_id=self.node_id, role=self.role,
                      lock_path=str(self.path), holder_pid=holder)
            raise NodeAlreadyRunning(
                f"节点 {self.node_id} 的同步进程（{self.role}）已在运行（进程号 {holder}，锁文件 {self.path}）。"
                "同一节点只能运行一个同步进程，请先停止正在运行的进程。"
            ) from None

        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
