"""Session-wide privacy check: no log the integration tests produce may contain an ID or phone number.

For every test marked ``integration`` the plugin collects:

- the output pytest captured from the test process (structlog lines of in-process nodes),
  scanned when the test's report is logged;
- every log file written into the temporary folders the test created (node logs, SIPp
  traces, mosquitto logs, console captures), found by comparing the base temporary folder
  before and after the test;
- the log folder of every Asterisk instance started in the session, copied before
  ``AsteriskInstance.stop(remove_files=True)`` deletes it, or read where it stays;
- the trace logs of every SIPp caller that ran in its own temporary folder, copied
  before ``SippCaller.close`` deletes that folder.

At the end of the session, when any integration test ran, the folders are scanned with
``tests.log_scan`` and the session fails with an error that lists each hit as
``file:line: kind masked-number``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from stack.asterisk import AsteriskInstance
from stack.sipp import SippCaller
from tests.log_scan import Hit, log_files, scan_files, scan_text

_HITS = pytest.StashKey[list[Hit]]()
_SCAN_ROOTS = pytest.StashKey[set[Path]]()
_INTEGRATION_RAN = pytest.StashKey[bool]()
_FOLDERS_BEFORE = pytest.StashKey[set[Path]]()

# pytest_runtest_logreport receives no config, so pytest_configure parks it here.
_CONFIG: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG[:] = [config]
    config.stash[_HITS] = []
    config.stash[_SCAN_ROOTS] = set()
    config.stash[_INTEGRATION_RAN] = False


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Scan what pytest captured from an integration test (stdout, stderr, log records) for each phase."""
    if "integration" not in report.keywords:
        return
    if not _CONFIG:
        return
    config = _CONFIG[0]
    for title, content in report.sections:
        config.stash[_HITS].extend(scan_text(content, f"{report.nodeid} [{title}]"))




@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Remember the temporary folders an integration test creates, module fixtures' folders included."""
    if item.get_closest_marker("integration") is None:
        return (yield)
    # pytest offers no public way to reach the session's TempPathFactory from a hook.
    base = item.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    before = _folders(base)
    item.stash[_FOLDERS_BEFORE] = before
    item.config.stash[_INTEGRATION_RAN] = True
    try:
        return (yield)
    finally:
        item.config.stash[_SCAN_ROOTS].update(_folders(base) - before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Remember the test's folders before teardown too.

    The last test of a session (or of an xdist worker) tears down the session fixtures,
    and so runs the scan, inside its own teardown: folders remembered only after the
    protocol would never be scanned.
    """
    before = item.stash.get(_FOLDERS_BEFORE, None)
    if before is not None:
        base = item.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        item.config.stash[_SCAN_ROOTS].update(_folders(base) - before)
    return (yield)


def _folders(base: Path) -> set[Path]:
    """Return the entries of the base temporary folder, without the ``<name>current`` symlinks pytest adds."""
    return {path for path in base.iterdir() if not path.is_symlink()}


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Give each test the structlog set-up the session started with.

    ``hotline`` commands run in-process call ``configure_logging``, which filters below INFO.
    Without this, a test that reads DEBUG events (the AGI trace) would pass or fail by which
    tests ran before it on the same worker.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session", autouse=True)
def _personal_number_scan(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the session when any log of the integration tests shows an ID or phone number in clear."""
    asterisk_copies = tmp_path_factory.getbasetemp() / "asterisk-logs"
    sipp_copies = tmp_path_factory.getbasetemp() / "sipp-caller-logs"
    started: list[Path] = []

    # AsteriskInstance keeps its logs inside the shared Asterisk root and deletes them on
    # stop(remove_files=True), so the log folder is copied just before the deletion.
    original_start = AsteriskInstance.start
    original_remove = AsteriskInstance._remove_files

    def start(instance: AsteriskInstance) -> None:
        started.append(instance.host_dir / "log")
        original_start(instance)

    def remove_files(instance: AsteriskInstance, requested: bool) -> None:
        logs = instance.host_dir / "log"
        if requested and logs.is_dir():
            shutil.copytree(logs, asterisk_copies / f"{instance.name}-{len(started)}", dirs_exist_ok=True)
        original_remove(instance, requested)

    original_close = SippCaller.close

    def close(caller: SippCaller) -> None:
        if caller.work_dir is not None and caller.work_dir.is_dir():
            target = sipp_copies / caller.work_dir.name
            for path in log_files([caller.work_dir]):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
        original_close(caller)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AsteriskInstance, "start", start)
        patch.setattr(AsteriskInstance, "_remove_files", remove_files)
        patch.setattr(SippCaller, "close", close)
        yield

    config = request.config
    if not config.stash[_INTEGRATION_RAN]:
        return
    roots = sorted(config.stash[_SCAN_ROOTS] | {asterisk_copies, sipp_copies}
                   | {path for path in started if path.is_dir()})
    hits = config.stash[_HITS] + scan_files(log_files(roots))
    if hits:
        listing = "\n".join(f"  {hit}" for hit in hits[:200])
        more = f"\n  ... and {len(hits) - 200} more" if len(hits) > 200 else ""
        pytest.fail(f"{len(hits)} ID or phone numbers in clear in the integration tests' logs:\n{listing}{more}",
                    pytrace=False)
