"""The runs table: one row per run, updated cell by cell as the runs change."""

from __future__ import annotations

import math
import time
from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist, RowKey

from expt.tui.format import duration, inert, number, plain, sparkline, status_text
from expt.tui.rows import RunRow

STATUS_ORDER = {s: i for i, s in enumerate(("running", "starting", "queued", "failed", "crashed", "stopped",
                                            "pruned", "completed"))}
BEFORE = ["sel", "id", "status"]
AFTER = ["epoch", "eta", "best", "trend", "time", "load", "tags", "loss", "device", "experiment"]
TAIL = ("tags", "loss", "device", "experiment")  # after the params that did not fit before the progress columns
TREND_WIDTH = 8
WIDTH_SAMPLE = 60  # rows measured to decide which params fit
LABELS = {"sel": " ", "trend": "trend"}
RIGHT = {"epoch", "eta", "loss", "best", "time"}
MAX_PARAM_COLUMNS = 8
SELECT_MARK = Text("✓", style="bold green")
UNSELECTED = Text(" ")


def _sortable(value: Any) -> tuple:
    """Numbers before text, missing values last, whatever the column holds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value).lower())


class RunsTable(DataTable):
    """Runs with their status, the params that differ between them, progress, best, trend, time, an active run's
    load (``g0 35%``: its GPU's utilisation or its CPU percent), tags (once a run shown has one), loss, device
    and experiment.

    Rows are keyed by the run's rid and columns by name (params as ``p:<key>``): ``upsert`` changes
    only the cells whose text changed, ``tick`` only the clocks of active runs. ``sort_column`` None
    means the running runs first, then newest first.
    """

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "First row", show=False),
        Binding("G", "scroll_bottom", "Last row", show=False),
    ]

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False):
        super().__init__(name=name, id=id, classes=classes, disabled=disabled, cursor_type="row",
                         zebra_stripes=True)
        self.rows_by_rid: dict[int, RunRow] = {}
        self._rid_by_id: dict[str, int] = {}
        self.selected: set[int] = set()
        self.differing: list[str] = []
        self.lead = 0
        self.optional: set[str] = set(AFTER)
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._shown: dict[tuple[int, str], str] = {}

    # -- columns and cells ------------------------------------------------------------------------------

    @property
    def column_names(self) -> list[str]:
        lead = [f"p:{k}" for k in self.differing[: self.lead]]
        rest = [f"p:{k}" for k in self.differing[self.lead:]]
        after = [c for c in AFTER if c in self.optional]
        return BEFORE + lead + [c for c in after if c not in TAIL] + rest + [c for c in after if c in TAIL]

    def lead_count(self, rows: list[RunRow], differing: list[str], width: int) -> int:
        """How many param columns fit between the status and the progress columns in ``width``, so that
        id, status, progress, best, trend and time stay on screen (the other params come after them)."""
        now = time.time()
        optional = self.wanted_columns(rows, now)
        fixed = [c for c in BEFORE + AFTER if c not in TAIL and (c in BEFORE or c in optional)]
        room = width - 1 - sum(self._width(rows, c, now) for c in fixed)  # 1: the scrollbar
        count = 0
        for key in differing:
            wide = self._width(rows, f"p:{key}", now)
            if wide > room:
                break
            room -= wide
            count += 1
        return max(count, 1 if differing else 0)

    def _width(self, rows: list[RunRow], column: str, now: float) -> int:
        sample = rows[:WIDTH_SAMPLE]  # the top of the table, which is what the screen shows
        return max([len(self.column_label(column))] + [len(self._cell(r, column, now)[0]) for r in sample]) + 2

    def wanted_columns(self, rows: Iterable[RunRow], now: float | None = None) -> set[str]:
        """The optional columns with something to show for ``rows`` (no empty eta column when nothing runs)."""
        now = now or time.time()
        wanted = {"time", "best"}
        for row in rows:
            for column in AFTER:
                if column not in wanted and self._cell(row, column, now)[0]:
                    wanted.add(column)
        return wanted

    def column_label(self, column: str) -> str:
        return inert(column[2:]) if column.startswith("p:") else LABELS.get(column, column)

    def _cell(self, row: RunRow, column: str, now: float) -> tuple[str, Any]:
        """(plain text, renderable) of one cell; the text decides whether the cell is redrawn."""
        run = row.run
        if column == "sel":
            return ("*", SELECT_MARK) if row.rid in self.selected else (" ", UNSELECTED)
        if column == "id":
            return run.id, plain(run.id, style="bold")
        if column == "status":
            return run.status, status_text(run.status)
        if column.startswith("p:"):
            text = number(run.params.get(column[2:]))
        elif column == "epoch":
            text = row.progress
        elif column == "eta":
            eta = row.eta(now)
            text = duration(eta) if eta is not None else ""
        elif column == "loss":
            text = number(row.loss)
        elif column == "best":
            text = number(run.best)
        elif column == "trend":
            text = sparkline(row.trend, TREND_WIDTH)
            return text, Text(text, style="green" if run.goal == "max" else "cyan")
        elif column == "time":
            text = duration(row.elapsed(now))
        elif column == "load":
            text = row.load_text  # g0 35%, cpu 45%: an active run's device and how busy it keeps it
        elif column == "tags":
            text = " ".join(run.tags)
        elif column == "device":
            text = run.device or ""
        else:
            text = run.experiment
        if column in RIGHT or column.startswith("p:") and isinstance(run.params.get(column[2:]), (int, float)):
            return text, Text(inert(text), justify="right")
        return text, plain(text)  # never a str: the table would parse it as markup on every redraw

    def sort_value(self, row: RunRow, column: str | None) -> tuple:
        run = row.run
        if column is None:  # what runs now first, then newest first
            return (run.status not in ("running", "starting"), -run.rid)
        if column == "sel":
            return (row.rid not in self.selected, -run.rid)
        if column == "id":
            return (run.experiment, run.seq)
        if column == "status":
            return (STATUS_ORDER.get(run.status, 99), -run.rid)
        if column.startswith("p:"):
            return _sortable(run.params.get(column[2:]))
        values = {
            "epoch": (run.epoch / run.epochs) if run.epochs and run.epoch is not None else None,
            "eta": row.eta(), "loss": row.loss, "time": row.elapsed(),
            "best": None if run.best is None else (-run.best if run.goal == "max" else run.best),
            "trend": row.trend[-1] if row.trend else None, "load": row.load, "device": run.device,
            "tags": " ".join(run.tags) or None,
            "experiment": run.experiment,
        }
        return _sortable(values.get(column))

    # -- filling ---------------------------------------------------------------------------------------

    def show(self, rows: list[RunRow], differing: list[str], now: float | None = None) -> None:
        """Replace every row and the columns (when the page or the params that differ change)."""
        now = now or time.time()
        keep = self.cursor_rid
        self.clear(columns=True)
        self._shown.clear()
        self.rows_by_rid = {row.rid: row for row in rows}
        self._rid_by_id = {row.id: row.rid for row in rows}
        self.selected &= set(self.rows_by_rid)
        self.differing = differing[:MAX_PARAM_COLUMNS]
        self.lead = self.lead_count(rows, self.differing, self.app.size.width)
        self.optional = self.wanted_columns(rows, now)
        for column in self.column_names:
            self.add_column(plain(self.column_label(column)), key=column)
        for row in rows:
            self._add(row, now)
        self.apply_sort(keep)

    def replace(self, rows: list[RunRow], differing: list[str], now: float | None = None) -> None:
        """Show exactly ``rows``: in place when the columns stay the same (a filter typed key by key),
        else rebuilt."""
        now = now or time.time()
        differing = differing[:MAX_PARAM_COLUMNS]
        if differing != self.differing or self.wanted_columns(rows, now) != self.optional or not self.columns:
            self.show(rows, differing, now)
            return
        keep = {row.rid for row in rows}
        self.remove([rid for rid in self.rows_by_rid if rid not in keep])
        self.upsert(rows, now)

    def _add(self, row: RunRow, now: float) -> None:
        cells = []
        for column in self.column_names:
            text, renderable = self._cell(row, column, now)
            self._shown[(row.rid, column)] = text
            cells.append(renderable)
        self.add_row(*cells, key=str(row.rid))

    def upsert(self, rows: Iterable[RunRow], now: float | None = None) -> list[int]:
        """Update the cells of known runs in place and add new ones; returns the rids added."""
        now = now or time.time()
        added = []
        resort = False
        for row in rows:
            old = self.rows_by_rid.get(row.rid)
            if old is row or old is not None and old.version > row.version:
                continue  # the very row shown, or an older copy of it
            self.rows_by_rid[row.rid] = row
            self._rid_by_id[row.id] = row.rid
            if old is None:
                self._add(row, now)
                added.append(row.rid)
                resort = True
                continue
            self._refresh_cells(row, self.column_names, now)
            if self.sort_column is not None and self.sort_value(old, self.sort_column) != \
                    self.sort_value(row, self.sort_column):
                resort = True
        if resort:
            self.apply_sort(self.cursor_rid)
        return added

    def _refresh_cells(self, row: RunRow, columns: Iterable[str], now: float) -> None:
        key = str(row.rid)
        for column in columns:
            text, renderable = self._cell(row, column, now)
            if self._shown.get((row.rid, column)) != text:
                self._shown[(row.rid, column)] = text
                # Widening is cheap; update_width=True on a narrower value re-measures the whole column.
                wider = column in self.columns and len(text) > self.columns[column].content_width
                try:
                    self.update_cell(key, column, renderable, update_width=wider)
                except CellDoesNotExist:
                    pass

    def remove(self, rids: Iterable[int]) -> None:
        for rid in rids:
            row = self.rows_by_rid.pop(rid, None)
            if row is None:
                continue
            self._rid_by_id.pop(row.id, None)
            self.selected.discard(rid)
            try:
                self.remove_row(str(rid))
            except RowDoesNotExist:
                pass

    def tick(self, now: float | None = None) -> None:
        """Advance the clocks (time, eta) of the active runs; no I/O."""
        now = now or time.time()
        for row in self.rows_by_rid.values():
            if row.run.active and row.run.started_at is not None:
                self._refresh_cells(row, ("time", "eta"), now)

    # -- order, cursor, selection ------------------------------------------------------------------------

    def set_sort(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self.apply_sort(self.cursor_rid)

    def apply_sort(self, keep: int | None = None) -> None:
        if self.row_count > 1:
            column = self.sort_column
            self.sort("id", key=lambda cell: self.sort_value(self.rows_by_rid[self._rid_by_id[cell.plain]], column),
                      reverse=self.sort_reverse)
        if keep is not None:
            self.move_to(keep)

    def move_to(self, rid: int) -> None:
        try:
            self.move_cursor(row=self.get_row_index(str(rid)), animate=False)
        except RowDoesNotExist:
            pass

    @property
    def cursor_rid(self) -> int | None:
        if not self.row_count:
            return None
        try:
            key: RowKey = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return int(key.value) if key.value is not None else None

    @property
    def cursor_row_data(self) -> RunRow | None:
        rid = self.cursor_rid
        return self.rows_by_rid.get(rid) if rid is not None else None

    def row_for(self, run_id: str) -> RunRow | None:
        rid = self._rid_by_id.get(run_id)
        return self.rows_by_rid.get(rid) if rid is not None else None

    def ordered(self) -> list[RunRow]:
        """The rows in the order shown."""
        return [self.rows_by_rid[int(row.key.value)] for row in self.ordered_rows if row.key.value is not None]

    def toggle(self, rid: int) -> None:
        if rid in self.selected:
            self.selected.discard(rid)
        else:
            self.selected.add(rid)
        self._refresh_cells(self.rows_by_rid[rid], ("sel",), time.time())

    def select(self, rids: Iterable[int], on: bool = True) -> None:
        changed = set(rids) & set(self.rows_by_rid)
        if on:
            self.selected |= changed
        else:
            self.selected -= changed
        now = time.time()
        for rid in changed:
            self._refresh_cells(self.rows_by_rid[rid], ("sel",), now)

    def selected_rows(self) -> list[RunRow]:
        return [row for row in self.ordered() if row.rid in self.selected]
