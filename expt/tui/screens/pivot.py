"""The table of an experiment: the pivot of its runs (``expt table``), filling in as they complete.

Opened with ``t`` on the Experiments screen or from the command palette ("Table of experiment NAME"). The
pivot is ``expt.pivot.build`` over the experiment's runs, read from runs.db in a thread worker; the app hands
this screen every ``RunsChanged`` from the live feed, and when one of them touches the experiment's runs the
table is read again (at most every ``RELOAD_EVERY`` seconds) and its cells updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from expt import pivot
from expt.errors import ExptError
from expt.project import Project
from expt.tui.format import plain
from expt.tui.messages import RunsChanged
from expt.tui.screens.base import ExptScreen
from expt.tui.widgets.nav_bar import NavBar

RELOAD_EVERY = 0.5  # seconds between reads while the experiment's runs change


@dataclass
class PivotLoaded(Message):
    """The experiment's pivot (None with ``problem``: no runs yet, a metric no run has ...)."""

    name: str
    table: pivot.Pivot | None
    metrics: list[str] = field(default_factory=list)  # what ``m`` cycles through
    rids: frozenset[int] = frozenset()
    problem: str = ""


def load_pivot(project: Project, name: str, metric: str | None, swap: bool) -> PivotLoaded:
    """Read the experiment's runs and build its pivot (in a thread: never on the event loop)."""
    from expt.store import Store

    with Store(project.db_path) as store:
        runs = store.runs("experiment = ?", (name,), order="seq")
    if not runs:
        return PivotLoaded(name, None, problem=f"no runs of {name} yet: enter on the Experiments screen launches it")
    metrics = pivot.default_metrics(runs)
    rows, cols = pivot.default_axes(runs)
    if swap:
        rows, cols = (cols, rows) if cols else ([], rows)
    if metric not in metrics:
        metric = None
    try:
        table = pivot.build(runs, rows, cols, metric)
    except ExptError as error:
        return PivotLoaded(name, None, metrics, frozenset(r.rid for r in runs), problem=str(error))
    return PivotLoaded(name, table, metrics, frozenset(r.rid for r in runs))


class PivotScreen(ExptScreen):
    """One experiment's runs as a pivot table: a cell per (row value, column value), the best marked."""

    HELP = ("The experiment's runs as a table (as `expt table NAME`): rows and columns are the swept keys, a cell "
            "holds the runs that share its values, with the mean ± 95% confidence interval and n over its "
            "completed runs (seeds); * marks the best cell of each column. Cells fill in as runs complete "
            "(… while they are pending).")

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "next_metric", "Metric"),
        Binding("x", "swap", "Swap rows/cols"),
    ]

    def __init__(self, name: str):
        super().__init__()
        self.experiment = name
        self.metric: str | None = None
        self.swapped = False
        self.loaded: PivotLoaded | None = None
        self._shape: tuple | None = None  # what the table's rows and columns are (rebuilt when it changes)
        self._shown: dict[tuple[int, int], tuple[str, bool]] = {}  # each cell's text and best mark, as shown

    def compose(self) -> ComposeResult:
        yield NavBar("Experiments", crumb=f"table {self.experiment}")
        yield Static("loading ...", id="pivot-title")
        yield DataTable(id="pivot-table", cursor_type="cell", zebra_stripes=True)
        yield Static("", id="pivot-notes")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#pivot-table", DataTable).focus()
        self.reload()

    def reload(self) -> None:
        self.in_thread(load_pivot, self.expt.project, self.experiment, self.metric, self.swapped, group="pivot",
                       description=f"reading the table of {self.experiment}")

    def apply_changes(self, message: RunsChanged) -> None:
        """Runs of the experiment changed (a new one, a status, a summary): read the table again, soon."""
        known = self.loaded.rids if self.loaded else frozenset()
        if any(rid in known or row.run.experiment == self.experiment for rid, row in message.rows.items()):
            self.reload_soon(RELOAD_EVERY)

    def on_pivot_loaded(self, message: PivotLoaded) -> None:
        self.loaded = message
        table = self.query_one("#pivot-table", DataTable)
        title = self.query_one("#pivot-title", Static)
        notes = self.query_one("#pivot-notes", Static)
        p = message.table
        if p is None:
            title.update(plain(f" {message.problem}", "yellow"))
            table.clear(columns=True)
            self._shape = None
            self._shown = {}
            notes.update("")
            return
        self.metric = p.metric
        heading = Text(" ")
        heading.append(plain(pivot.title(p), "bold"))
        if p.best:
            heading.append("   * best", style="green")
        heading.append(f"   m: metric ({len(message.metrics)})  x: swap rows/cols", style="dim")
        title.update(heading)
        shape = (p.metric, p.rows, p.cols, tuple(p.row_values), tuple(p.col_values))
        body = pivot.grid(p)
        if shape != self._shape:
            table.clear(columns=True)
            for i, key in enumerate(p.rows):
                table.add_column(plain(key, "bold"), key=f"r{i}")
            for j, col in enumerate(p.col_values):
                table.add_column(plain(pivot.col_label(p, col), "bold"), key=f"c{j}")
            for i, (labels, cells) in enumerate(body):
                table.add_row(*(plain(x, "cyan") for x in labels), *(self._cell(t, b) for t, b in cells), key=f"{i}")
            self._shape = shape
            self._shown = {(i, j): cell for i, (_, cells) in enumerate(body) for j, cell in enumerate(cells)}
        else:  # the same rows and columns: only the cells that changed (no flicker, the cursor stays)
            for i, (_, cells) in enumerate(body):
                for j, cell in enumerate(cells):
                    if self._shown.get((i, j)) != cell:
                        table.update_cell(f"{i}", f"c{j}", self._cell(*cell), update_width=True)
                        self._shown[(i, j)] = cell
        notes.update(Text("\n".join(f" {line}" for line in pivot.notes(p)), style="dim"))

    @staticmethod
    def _cell(text: str, best: bool) -> Text:
        if best and text:
            return Text(f"*{text}", style="bold green", justify="right")
        return Text(text, justify="right", style="dim" if text.endswith(pivot.PENDING) else "")

    def action_next_metric(self) -> None:
        if self.loaded is None or not self.loaded.metrics:
            return
        names = self.loaded.metrics
        index = names.index(self.metric) if self.metric in names else -1
        self.metric = names[(index + 1) % len(names)]
        self.reload()

    def action_swap(self) -> None:
        self.swapped = not self.swapped
        self.reload()
