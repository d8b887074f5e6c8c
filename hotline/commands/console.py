"""Console for the CLI's Chinese tables."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

# Width used when the output is a pipe or a file and COLUMNS is not set. rich would otherwise
# assume 80 columns; a wide default keeps each table row on one line for grep and similar tools.
PIPE_WIDTH = 240


def output_width(environ: Mapping[str, str] | None = None) -> int:
    """Return the width for output that is not a terminal: COLUMNS when it is a positive integer, else PIPE_WIDTH."""
    environ = os.environ if environ is None else environ
    columns = environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return PIPE_WIDTH


def operator_console(*, stderr: bool = False) -> Console:
    """Return a console sized to the terminal, or to COLUMNS (default PIPE_WIDTH) when not one."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        # rich reads the terminal size, and COLUMNS when set.
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=output_width())


@dataclass(frozen=True)
class FitColumn:
    """A column of a table that must fit the console without cutting ids or times."""

    header: str
    # Ids, times and codes are never wrapped or cut; other columns wrap their text.
    whole: bool = False
    # Narrowest width a wrapping column is given when the table is too wide.
    min_width: int = 8
    # Columns with a higher rank are dropped first when the whole columns cannot fit; 0 is never dropped.
    drop_rank: int = 0
    justify: JustifyMethod = "left"


def _cell_width(text: str) -> int:
    # Cells are rich markup, as Table.add_row reads them.
    plain = Text.from_markup(text).plain
    return max((cell_len(line) for line in plain.split("\n")), default=0)


def _table_overhead(count: int) -> int:
    # Padding of one cell either side, none at the outer edges, and one separator between columns.
    return 2 * count - 2 + (count - 1)


def fit_columns(columns: Sequence[FitColumn], rows: Sequence[Sequence[str]], width: int) -> tuple[list[int], list[int]]:
    """Choose which columns to show within ``width`` and the width of each.

    Returns the indexes of the visible columns and their widths. Whole columns get their widest
    cell. When the table is too wide, each wrapping column gets its ``min_width`` and the room
    left goes to the wrapping columns in order, each up to its widest cell. When the minimums do
    not fit, columns are dropped by ``drop_rank``.

    NOTE: when the visible whole columns alone exceed ``width`` (a console narrower than about 60
    columns for the ticket tables), rich shrinks them and cuts ids with "…".
    """
    natural = [max([_cell_width(column.header), *(_cell_width(row[i]) for row in rows)]) for i, column in enumerate(columns)]
    visible = list(range(len(columns)))

    def needed(indexes: list[int]) -> int:
        return sum(natural[i] if columns[i].whole else min(natural[i], columns[i].min_width) for i in indexes) \
            + _table_overhead(len(indexes))

    while needed(visible) > width:
        droppable = [i for i in visible if columns[i].drop_rank > 0]
        if not droppable:
            break
        visible.remove(max(droppable, key=lambda i: (columns[i].drop_rank, i)))

    widths = [natural[i] for i in visible]
    if sum(widths) + _table_overhead(len(visible)) <= width:
        return visible, widths

    # Start every wrapping column at its minimum, then hand out the room left in column order.
    wrapping = [position for position, i in enumerate(visible) if not columns[i].whole]
    for position in wrapping:
        widths[position] = min(natural[visible[position]], columns[visible[position]].min_width)
    room = width - _table_overhead(len(visible)) - sum(widths)
    for position in wrapping:
        extra = max(min(natural[visible[position]] - widths[position], room), 0)
        widths[position] += extra
        room -= extra
    return visible, widths


def fit_table(title: str, columns: Sequence[FitColumn], rows: Sequence[Sequence[str]], width: int) -> Table:
    """Build a borderless table that fits ``width``: ids and times whole, free text wrapped, low-value columns dropped."""
    visible, widths = fit_columns(columns, rows, width)
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, column_width in zip(visible, widths):
        column = columns[i]
        if column.whole:
            table.add_column(column.header, no_wrap=True, min_width=column_width, justify=column.justify)
        else:
            table.add_column(column.header, overflow="fold", width=column_width, justify=column.justify)
    for row in rows:
        table.add_row(*(row[i] for i in visible))
    return table
