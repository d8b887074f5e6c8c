"""Console for the CLI's Chinese tables."""

from __future__ import annotations

import sys

from rich.console import Console

# Width used when the output is a pipe or a file. rich would otherwise assume 80 columns
# and cut ticket ids that an operator needs to copy.
PIPE_WIDTH = 240


def operator_console(*, stderr: bool = False) -> Console:
    """Return a console sized to the terminal, or wide enough for whole rows when not one."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPE_WIDTH)
