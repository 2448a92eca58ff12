"""Runs (home): every run, live; filter, sort, select; open, compare, stop, resume, samples."""

from __future__ import annotations

import time

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static

from expt import analysis
from expt.core.runfiles import FINAL_STATUSES, RESUMABLE_STATUSES
from expt.tui import actions
from expt.tui.messages import RunsChanged, RunsLoaded
from expt.query import Query, QueryError
from expt.tui.rows import FILTER_HELP, RunRow, parse_filter
from expt.tui.screens.base import ExptScreen
from expt.tui.widgets.nav_bar import NavBar
from expt.tui.widgets.runs_table import MAX_PARAM_COLUMNS, RunsTable

MAX_COMPARE = 8
CLOCK_INTERVAL = 1.0
INPUT_GRACE = 0.2  # seconds after a key during which live updates wait (a redraw would delay the next key)


class RunsScreen(ExptScreen):
    """The runs table, kept current by the live feed; a page of the newest runs, more on demand."""

    HELP = ("Every run of the project, the running ones first, then newest first, updated as the runs log. "
            "The params columns are the ones that differ between the runs shown (swept ones first; those that "
            "do not fit come after the time). Filter: " + FILTER_HELP + ".")

    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("slash", "filter", "Filter", show=False),  # the filter line says "/ filter"
        Binding("space", "toggle_select", "Select"),
        Binding("c", "compare", "Compare"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("i", "samples", "Samples"),
        Binding("o", "sort", "Sort", show=False),
        Binding("a", "select_all", "Select all shown", show=False),
        Binding("m", "more", "Load more rows", show=False),
        Binding("escape", "clear", "Clear filter and selection", show=False),
        Binding("tab", "app.go('experiments')", "Next screen", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="runs")
        self.where = Query()
        self.total = 0
        self.matching = 0
        self.loaded = 0  # rows of the page loaded so far (for the next offset)
        self.loading = False
        self._pending: dict[int, RunRow] = {}
        self.known: dict[int, RunRow] = {}  # every row loaded or changed since: what a filter starts from
        self._shown = False
        self.ready = False  # the first page is in the table
        self._waiting = False  # a timer will apply the pending rows once the user pauses
        self._status_text = ""
        self._last_apply = 0.0
        # made here, not looked up: a timer or a late message may still arrive while the app shuts down
        self.table = RunsTable(id="runs-table")
        self.status = Static("", id="runs-status", markup=False)
        self.filter_error = Static("", id="filter-error", markup=False)  # a bad filter: message and caret

    def compose(self) -> ComposeResult:
        yield NavBar("Runs")
        yield Input(placeholder=f"/ filter: {FILTER_HELP}", id="filter", compact=True)
        yield self.filter_error
        yield self.table
        yield self.status
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.table.focus()
        self.clock = self.set_interval(CLOCK_INTERVAL, self._tick, pause=True)
        self.reload()

    def on_screen_resume(self) -> None:
        self._shown = True
        self.clock.resume()
        if self.ready:
            self._apply_pending()

    def on_resize(self) -> None:
        table = self.table
        rows = table.ordered()
        if table.lead_count(rows, table.differing, self.app.size.width) != table.lead:
            table.show(rows, table.differing)

    def on_screen_suspend(self) -> None:
        self._shown = False
        self.clock.pause()

    def _tick(self) -> None:
        if time.monotonic() - self._last_apply >= CLOCK_INTERVAL:  # a live update just set the clocks
            self.table.tick()

    # -- loading and live changes -------------------------------------------------------------------------

    def reload(self) -> None:
        self.loading = True
        self.in_thread(actions.load_page, self.expt.project, self.where, 0, group="page",
                       description="loading runs")

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.loading = False
        table = self.table
        self.total, self.matching = message.total, message.matching
        for row in message.rows:
            self._remember(row)
        if message.append:
            table.upsert([r for r in message.rows if r.rid not in table.rows_by_rid])
            self.loaded += len(message.rows)
            self._refresh_columns()
        else:
            rows = [self.known[r.rid] for r in message.rows]
            self.loaded = len(rows)
            table.replace(rows, self._differing(rows))
            if not self.ready:
                self.ready = True
                self.call_after_refresh(self.expt.started)
            later = [r for rid, r in self._pending.items() if rid not in table.rows_by_rid]
            self._pending = {}
            if later:  # runs that changed while the page was read
                self._apply(later)
        self._update_status()

    def apply_changes(self, message: RunsChanged) -> None:
        """Called by the app for every RunsChanged; while hidden, the rows wait for the screen to return,
        and while the user is typing they wait a moment (a redraw of the table would delay the key)."""
        self.total = message.total
        for row in message.rows.values():
            self._remember(row)
        self._pending.update(message.rows)
        if self._shown and self.ready:
            self._apply_pending()

    def _apply_pending(self) -> None:
        wait = INPUT_GRACE - (time.monotonic() - self.expt.last_input)
        if wait > 0:
            if not self._waiting:
                self._waiting = True
                self.set_timer(wait, self._apply_pending_later)
            return
        if self._pending and self._shown and self.ready:
            pending, self._pending = list(self._pending.values()), {}
            self._apply(pending)

    def _apply_pending_later(self) -> None:
        self._waiting = False
        self._apply_pending()

    def _remember(self, row: RunRow) -> None:
        """Keep the newest copy of every row seen (pages and live changes): a filter shows them at once."""
        known = self.known.get(row.rid)
        if known is None or known.version <= row.version:
            self.known[row.rid] = row

    def _apply(self, rows: list[RunRow]) -> None:
        self._last_apply = time.monotonic()
        for row in rows:
            self._remember(row)
        rows = [self.known[r.rid] for r in rows]
        table = self.table
        keep = [r for r in rows if self.where.matches(r.run)]
        gone = [r.rid for r in rows if r.rid in table.rows_by_rid and not self.where.matches(r.run)]
        if gone:
            table.remove(gone)
            self.matching -= len(gone)
        before = {r.rid: table.rows_by_rid[r.rid].run.params for r in keep if r.rid in table.rows_by_rid}
        added = table.upsert(keep)
        self.matching += len(added)
        self.loaded += len(added)
        if added or any(before[r.rid] != r.run.params for r in keep if r.rid in before) or \
                not table.wanted_columns(keep) <= table.optional:
            self._refresh_columns()
        self._update_status()

    def _differing(self, rows: list[RunRow]) -> list[str]:
        """The params that differ between ``rows``: swept ones first, then those every run has."""
        params = [r.run.params for r in rows]
        keys = analysis.differing_keys(params)
        swept = {k for r in rows for k in r.run.varying}
        return sorted(keys, key=lambda k: (k not in swept, not all(k in p for p in params)))

    def _refresh_columns(self) -> None:
        table = self.table
        rows = table.ordered()
        differing = self._differing(rows)[:MAX_PARAM_COLUMNS]
        if differing != table.differing or table.wanted_columns(rows) != table.optional:
            table.show(rows, differing)

    def _update_status(self) -> None:
        table = self.table
        shown = table.row_count
        parts = []
        if self.where:
            parts.append(f"{shown} of {self.matching} matching ({self.total} runs)")
        else:
            parts.append(f"{shown} of {self.total} runs" if shown < self.total else f"{shown} runs")
        if shown < self.matching:
            parts.append("m: more")
        if table.selected:
            parts.append(f"{len(table.selected)} selected")
        if table.sort_column:
            reversed_ = " (reversed)" if table.sort_reverse else ""
            parts.append(f"sorted by {table.column_label(table.sort_column)}{reversed_}")
        if not self.total and not self.loading:
            parts = ["no runs yet: 2 (Experiments), pick one, enter to launch it"]
        text = " " + "  |  ".join(parts)
        if text != self._status_text:  # one line, always: no need to lay the screen out again
            self._status_text = text
            self.status.update(text, layout=False)

    # -- filter ------------------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        try:
            where = parse_filter(event.value)
        except QueryError as error:  # the table keeps its last good filter; the problem shows under the line
            self.filter_error.update(f"{error}\n{error.caret()}")
            self.filter_error.display = True
            return
        if self.filter_error.display:
            self.filter_error.display = False
            self.filter_error.update("")
        if where != self.where:
            self.where = where
            if self.ready:  # the rows already in memory at once; runs.db's answer follows
                rows = sorted((r for r in self.known.values() if where.matches(r.run)), key=lambda r: -r.rid)
                self.table.replace(rows[: actions.PAGE], self._differing(rows[: actions.PAGE]))
                self.matching = len(rows)
                self._update_status()
            self.reload()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def set_filter(self, text: str) -> None:
        self.query_one("#filter", Input).value = text

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus:
            self.table.focus()
            return
        if self.table.selected:
            self.table.select(list(self.table.selected), on=False)
            self._update_status()
        elif box.value:
            box.value = ""

    def action_more(self) -> None:
        if self.loading or self.table.row_count >= self.matching:
            return
        self.loading = True
        self.in_thread(actions.load_page, self.expt.project, self.where, self.loaded, group="more",
                       description="loading more runs")

    @on(DataTable.RowHighlighted, "#runs-table")
    def _near_the_end(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row >= self.table.row_count - 1:
            self.action_more()

    # -- sort and selection -----------------------------------------------------------------------------

    def action_sort(self) -> None:
        from expt.tui.screens.sort_picker import SortPicker

        table = self.table
        columns = [(c, table.column_label(c)) for c in table.column_names if c != "sel"]

        def chosen(choice: str | None) -> None:
            if choice is None:
                return
            if choice == "newest":
                table.set_sort(None)
            elif choice == table.sort_column:
                table.set_sort(choice, not table.sort_reverse)
            else:
                table.set_sort(choice)
            self._update_status()

        self.app.push_screen(SortPicker(columns, table.sort_column, table.sort_reverse), chosen)

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        table = self.table
        if column == "sel":
            return
        table.set_sort(column, not table.sort_reverse if column == table.sort_column else False)
        self._update_status()

    def action_toggle_select(self) -> None:
        rid = self.table.cursor_rid
        if rid is not None:
            self.table.toggle(rid)
            self.table.action_cursor_down()
            self._update_status()

    def action_select_all(self) -> None:
        table = self.table
        everything = set(table.rows_by_rid)
        table.select(everything, on=not everything <= table.selected)
        self._update_status()

    def _targets(self) -> list[RunRow]:
        chosen = self.table.selected_rows()
        if chosen:
            return chosen
        row = self.table.cursor_row_data
        return [row] if row is not None else []

    # -- actions ----------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#runs-table")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        row = self.table.cursor_row_data
        if row is not None:
            self.expt.open_run(row.id)

    def action_samples(self) -> None:
        targets = self._targets()
        if targets:
            self.expt.open_samples([r.id for r in targets])

    def action_compare(self) -> None:
        chosen = self.table.selected_rows()
        if len(chosen) < 2:
            self.notify("select 2 to 8 runs (or seed groups) with space first; a selects every run shown",
                        severity="warning")
            return
        groups = analysis.group_by_seed([r.run for r in chosen])
        if len(groups) > MAX_COMPARE:
            self.notify(f"{len(chosen)} runs make {len(groups)} seed groups: compare shows {MAX_COMPARE} at most",
                        severity="warning")
            return
        self.expt.open_compare([r.id for r in sorted(chosen, key=lambda r: r.rid)])

    def action_stop(self) -> None:
        targets = [r for r in self._targets() if r.run.status not in FINAL_STATUSES]
        if not targets:
            self.notify("nothing to stop: no queued or running run chosen", severity="warning")
            return
        self.expt.confirm_stop([r.run for r in targets])

    def action_resume(self) -> None:
        targets = [r for r in self._targets() if r.run.status in RESUMABLE_STATUSES]
        if not targets:
            self.notify("nothing to resume: choose stopped, crashed, failed or pruned runs", severity="warning")
            return
        self.expt.resume([r.id for r in targets])

