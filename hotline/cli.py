"""The ``hotline`` command: runs nodes and the demo, and gives admins their tools."""

from __future__ import annotations

import click

from hotline.cli_text import localize_cli
from hotline.logging import configure_logging

from hotline.commands.acd import acd
from hotline.commands.backup import backup, restore
from hotline.commands.brokers import brokers
from hotline.commands.demo import demo
from hotline.commands.flows import flows
from hotline.commands.profiles import profiles
from hotline.commands.prompts import prompts
from hotline.commands.recordings import recordings
from hotline.commands.replay import replay
from hotline.commands.run import run
from hotline.commands.sla import sla
from hotline.commands.status import status
from hotline.commands.tickets import tickets


@click.group(help="12349 民政服务热线引擎：呼叫流程、坐席分配、工单和逐级上报。")
@click.version_option(package_name="hotline12349", message="%(prog)s %(version)s", help="显示版本号并退出。")
def main() -> None:
    # Operators read the commands' own Chinese output; library INFO lines would bury it.
    # ``hotline run`` sets its own level.
    configure_logging("WARNING")


main.add_command(run)
main.add_command(demo)
main.add_command(flows)
main.add_command(prompts)
main.add_command(recordings)
main.add_command(tickets)
main.add_command(sla)
main.add_command(profiles)
main.add_command(acd)
main.add_command(replay)
main.add_command(status)
main.add_command(brokers)
main.add_command(backup)
main.add_command(restore)

# Usage lines, help headings and usage errors come from click; this makes them Chinese.
localize_cli(main)
