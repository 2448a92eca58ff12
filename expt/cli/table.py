"""Tables of many short rows as one rich Text: the columns measured once, each cell padded and appended.

rich's Table measures and renders every cell as its own renderable (padding, wrapping, cropping): 20 ms for the
50 rows of `expt ls`, the largest part of the command's own work. The runs table needs far less: one line per
row, one column (the params) that folds to fit the terminal, every other cell kept whole.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from rich.cells import cell_len, chop_cells
from rich.text import Text

from expt.cli.render import duration, inert, number, params_text, progress, status_text, when
from expt.store import Run

GAP = "  "


class Column(NamedTuple):
    header: str
    right: bool = False   # right-justified (numbers)
    style: str = ""       # for every cell of the column (a Text cell adds its own)
    fold: bool = False    # this column's cells fold onto more lines when the table is wider than the terminal


Cell = str | Text


def table_text(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int,
               header_style: str = "bold") -> Text:
    """The rows under a header line, columns two spaces apart, lines without trailing spaces; a folding column
    narrows to fit ``width`` (to no fewer than 8 cells) and its longer cells go on as more lines."""
    plain = [[cell.plain if isinstance(cell, Text) else cell for cell in row] for row in rows]
    widths = [max([cell_len(c.header)] + [cell_len(row[i]) for row in plain]) for i, c in enumerate(columns)]
    folding = [i for i, c in enumerate(columns) if c.fold]
    overflow = sum(widths) + len(GAP) * (len(columns) - 1) - width
    for i in folding[:1] if overflow > 0 else ():
        widths[i] = max(8, cell_len(columns[i].header), widths[i] - overflow)
    lines = [_line(columns, widths, [Text(c.header, style=header_style) for c in columns])]
    for row, texts in zip(rows, plain):
        cells, more = list(row), []
        for i in folding:
            parts = _fold(texts[i], widths[i])
            if len(parts) > 1:
                style = row[i].style if isinstance(row[i], Text) else ""
                cells[i] = Text(parts[0], style=style)
                more += [[""] * len(columns) for _ in range(len(parts) - 1 - len(more))]
                for extra, part in zip(more, parts[1:]):
                    extra[i] = Text(part, style=style)
        lines += [_line(columns, widths, line) for line in (cells, *more)]
    return Text("\n").join(lines)


def _line(columns: Sequence[Column], widths: Sequence[int], cells: Sequence[Cell]) -> Text:
    line = Text()
    for cell, column, width in zip(cells, columns, widths):
        pad = " " * (width - cell_len(cell.plain if isinstance(cell, Text) else cell))
        if column.right:
            line.append(pad)
        start = len(line)
        if isinstance(cell, Text):
            line.append_text(cell)
        else:
            line.append(cell)
        if column.style:
            line.stylize_before(column.style, start, len(line))
        line.append(GAP if column.right else pad + GAP)
    line.rstrip()
    return line


def _fold(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken at spaces, and inside words longer than a line."""
    if cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if cell_len(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        pieces = chop_cells(word, width) if cell_len(word) > width else [word]
        lines += pieces[:-1]
        line = pieces[-1]
    lines.append(line)
    return lines


RUN_COLUMNS = (Column("id", style="bold"), Column("status"), Column("params", fold=True), Column("best", right=True),
               Column("epoch", right=True), Column("time", right=True), Column("created", style="dim"))


def runs_text(runs: Sequence[Run], differing: Sequence[str], width: int) -> Text:
    """The runs table of `expt ls`: id, status, the params that differ (else the experiment), best, epoch, time."""
    columns = list(RUN_COLUMNS)
    if not differing:
        columns[2] = Column("experiment", fold=True)
    rows = [[inert(run.id), status_text(run.status),
             params_text(run.params, differing) if differing else inert(run.experiment),
             number(run.best) if run.best is not None else "", progress(run), duration(run.duration),
             when(run.created_at)] for run in runs]
    if any(run.tags for run in runs):  # a tags column only when some shown run has tags
        columns.insert(2, Column("tags", style="cyan"))
        for row, run in zip(rows, runs):
            row.insert(2, inert(" ".join(run.tags)))
    return table_text(columns, rows, width)
