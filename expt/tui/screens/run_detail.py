"""Run detail: params and summary, a chart per metric, the log followed live, the recipe's tables, the run's
system metrics (``sys/``: CPU, memory, I/O, GPU) charted apart from its training metrics."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Log, Static, TabbedContent, TabPane

from expt.core import runfiles
from expt.core.runfiles import FINAL_STATUSES, RESUMABLE_STATUSES, SYS_PREFIX, is_sys_key
from expt.store import Run
from expt.tui import actions
from expt.tui.format import duration, inert, number, plain, status_text
from expt.tui.messages import RunLoaded, RunsChanged, RunUpdated
from expt.tui.rows import LOSS_KEYS, RunRow
from expt.tui.screens.base import ExptScreen
from expt.tui.screens.edit_text import EditTextScreen
from expt.tui.widgets.key_values import KeyValues
from expt.tui.widgets.metric_chart import MetricChart
from expt.tui.widgets.nav_bar import NavBar
from expt.tui.widgets.record_table import RecordTable

POLL = 0.5  # seconds between looks at an active run's new metrics and log lines
TABS = ("tab-overview", "tab-charts", "tab-log", "tab-tables", "tab-system")
SYS_ORDER = ("cpu_percent", "rss_mb", "util", "mem_mb", "proc_mem_mb", "power_w", "temp_c", "read_mb_s",
             "write_mb_s")  # the System tab's charts: the CPU's first, then each GPU's, then I/O
WIDE = 120  # columns from which charts go two to a row


def header_text(run: Run, now: float | None = None) -> Text:
    row = RunRow(run)
    text = Text.assemble(" ", (inert(run.id), "bold"), "  ", status_text(run.status))
    if row.progress:
        text.append(inert(f"  epoch {row.progress}" + (f" {run.phase}" if run.phase and run.active else "")))
    eta = row.eta(now)
    if eta is not None:
        text.append(f"  eta {duration(eta)}")
    elapsed = row.elapsed(now)
    if elapsed is not None:
        text.append(f"  time {duration(elapsed)}")
    if run.device:
        text.append(inert(f"  {run.device}"), style="dim")
    line = [f"{inert(k)}={number(v)}" for k, v in run.varying.items()]
    best = run.best
    if best is not None:
        epoch = run.summary.get("best_epoch")
        line.append(f"best {run.metric} {number(best)}" + (f" (epoch {epoch})" if epoch is not None else ""))
    text.append("\n " + "  ".join(line) if line else "\n " + inert(run.experiment), style="cyan")
    if run.error:
        text.append(f"\n error: {inert(run.error)}", style="bold red")
    return text


def chart_order(keys: list[str], metric: str | None) -> list[str]:
    """The training metrics (the run's metric and loss first), then the system ones in SYS_ORDER."""
    train = [k for k in keys if not is_sys_key(k)]
    first = [k for k in (metric, *LOSS_KEYS) if k in train]
    return first + sorted(k for k in train if k not in first) + sorted((k for k in keys if is_sys_key(k)),
                                                                       key=_sys_rank)


def _sys_rank(key: str) -> tuple:
    parts = key.removeprefix(SYS_PREFIX).split("/")  # cpu_percent, or gpu0/util
    name = parts[-1]
    group = 1 if len(parts) > 1 else 0 if name in ("cpu_percent", "rss_mb") else 2  # the CPU, each GPU, I/O
    return (group, parts[0] if len(parts) > 1 else "", SYS_ORDER.index(name) if name in SYS_ORDER else len(SYS_ORDER),
            key)


def chart_of(key: str) -> tuple[str, str | None]:
    """The chart a metric is drawn in and its line's label there (None: the run's id). A GPU's total memory is
    the second line of its memory chart, so the chart shows how close the run is to running out."""
    if is_sys_key(key) and key.endswith("/mem_total_mb"):
        return key.removesuffix("mem_total_mb") + "mem_mb", "total"
    if is_sys_key(key) and key.endswith("/mem_mb"):
        return key, "used"
    return key, None


class RunDetailScreen(ExptScreen):
    """One run, live while it runs: new points join the charts, new lines the log."""

    HELP = ("One run: Overview (params, the varying ones highlighted, and summary), Charts (each metric "
            "per epoch), Log (followed live), Tables (per-class results and the like, when the recipe "
            "writes them), System (its CPU, memory, I/O and GPU over seconds since it started, every "
            "sys_interval s). Stopping saves a checkpoint; resuming continues from it in the same run.")

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("i", "samples", "Samples"),
        Binding("t", "edit_tags", "Tags"),
        Binding("n", "edit_note", "Note"),
        Binding("tab", "next_tab", "Next tab"),
        Binding("shift+tab", "previous_tab", "Previous tab", show=False),
    ]

    def __init__(self, run_id: str, run: Run | None = None):
        super().__init__()
        self.run_id = run_id
        self.run: Run | None = run
        self.charts: dict[str, MetricChart] = {}  # the Charts tab's: training metrics only
        self.sys_charts: dict[str, MetricChart] = {}  # the System tab's, made when it is first shown
        self.sys_points: dict[str, list[list[float]]] = {}  # every sys/ point received, by key
        self.log_offset = 0
        self.tables_stamp: tuple[float, ...] = ()
        self._updating = False
        self._shown_run: Run | None = None
        self._header = ""

    def compose(self) -> ComposeResult:
        yield NavBar("Runs", crumb=self.run_id)
        yield Static(header_text(self.run) if self.run else f" {self.run_id}", id="run-header")
        with TabbedContent(id="run-tabs"):
            with TabPane("Overview", id="tab-overview"):
                with VerticalScroll():
                    yield Static("", id="run-bookkeeping")
                    with Horizontal(id="overview"):
                        yield KeyValues("params", id="run-params")
                        yield KeyValues("summary", id="run-summary")
                    yield Static("", id="run-paths")
            with TabPane("Charts", id="tab-charts"):
                yield VerticalScroll(Static("loading ...", id="charts-note"), id="charts")
            with TabPane("Log", id="tab-log"):
                yield Log(id="run-log", max_lines=5000, auto_scroll=True)
            with TabPane("Tables", id="tab-tables"):
                yield VerticalScroll(Static("loading ...", id="tables-note"), id="tables")
            with TabPane("System", id="tab-system"):
                yield VerticalScroll(Static("loading ...", id="system-note"), id="system")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.poll = self.set_interval(POLL, self._poll, pause=True)
        self._load()

    def show_run(self, run_id: str, run: Run | None = None) -> None:
        """Point the screen at another run. The app builds this screen once and keeps it, so opening a run
        costs a load, not thirty widgets built and torn down again."""
        self.run_id, self.run = run_id, run
        self.log_offset, self.tables_stamp, self._updating = 0, (), False
        self._shown_run, self._header = None, ""
        if not self.is_mounted:
            return
        self.poll.pause()
        self.query_one(NavBar).crumb = run_id
        self.query_one("#run-header", Static).update(header_text(run) if run else f" {run_id}")
        if run is not None:
            self._show_run(run)
        for chart in [*self.charts.values(), *self.sys_charts.values()]:
            chart.remove()
        self.charts, self.sys_charts, self.sys_points = {}, {}, {}
        for note in ("#charts-note", "#system-note"):
            self.query_one(note, Static).update("loading ...")
            self.query_one(note, Static).display = True
        self.query_one("#run-log", Log).clear()
        self.query_one("#tables").remove_children(".run-table")
        self.query_one("#tables-note", Static).update("loading ...")
        self._load()

    def _load(self) -> None:
        self.in_thread(actions.load_run, self.expt.project, self.run_id, group="run", description="loading the run")

    def on_resize(self) -> None:
        for box in ("#charts", "#system"):
            self.query_one(box).set_class(self.size.width >= WIDE, "-wide")

    def on_screen_resume(self) -> None:
        if self.run is not None and self.run.status not in FINAL_STATUSES:
            self.poll.resume()

    def on_screen_suspend(self) -> None:
        self.poll.pause()

    # -- data --------------------------------------------------------------------------------------------

    def on_run_loaded(self, message: RunLoaded) -> None:
        if message.run.id != self.run_id:
            return  # the run shown before
        self._show_run(message.run)
        charts = self.query_one("#charts")
        note = self.query_one("#charts-note", Static)
        note.display = not any(not is_sys_key(k) for k in message.metrics)
        note.update("no metrics logged yet")
        for key in chart_order(list(message.metrics), message.run.metric):
            if is_sys_key(key):
                self.sys_points[key] = list(message.metrics[key])
            else:
                self._chart(key).set_series({message.run.id: _xy(message.metrics[key])})
        charts.set_class(self.size.width >= WIDE, "-wide")
        self._show_system()
        log = self.query_one("#run-log", Log)
        log.clear()
        log.write_lines(message.log)
        self.log_offset = message.log_offset
        self._show_tables(message.tables)
        self.tables_stamp = message.tables_stamp
        if message.run.status not in FINAL_STATUSES:
            self.poll.resume()

    def _show_run(self, run: Run) -> None:
        """Update what changed (each update of a text re-lays out the screen: not four times a second)."""
        before, self.run = self._shown_run, run
        self._shown_run = run
        header = header_text(run)
        if header.plain != self._header:
            lines_changed = header.plain.count("\n") != self._header.count("\n") or not self._header
            self._header = header.plain
            self.query_one("#run-header", Static).update(header, layout=lines_changed)
        if before is None or (before.tags, before.note) != (run.tags, run.note):
            self.query_one("#run-bookkeeping", Static).update(bookkeeping_text(run))
        if before is None or before.params != run.params:
            self.query_one("#run-params", KeyValues).set_values(run.params, run.varying)
        if before is None or before.summary != run.summary:
            self.query_one("#run-summary", KeyValues).set_values(run.summary)
        if before is None:
            folder = _shown_path(run.path, self.expt.project.root)
            paths = plain(f"folder {folder}\nlog    {folder}/{runfiles.LOG}", style="dim")
            self.query_one("#run-paths", Static).update(paths)

    def _chart(self, key: str) -> MetricChart:
        chart = self.charts.get(key)
        if chart is None:
            chart = self.charts[key] = MetricChart(key)
            self.query_one("#charts").mount(chart)
            self.query_one("#charts-note", Static).display = False
        return chart

    # -- the System tab: its charts are made when it is first shown (opening a run mounts none of them) ----

    def _system_shown(self) -> bool:
        return self.query_one(TabbedContent).active == "tab-system"

    @on(TabbedContent.TabActivated, "#run-tabs")
    def _tab_shown(self) -> None:
        self._show_system()

    def _show_system(self, new: dict[str, list[list[float]]] | None = None) -> None:
        """Add the ``new`` sys/ points to their charts (all points when None). A chart is made only while the
        System tab is shown (from every point received); one made before follows even while hidden."""
        note = self.query_one("#system-note", Static)
        note.display = not self.sys_points
        if note.display:
            note.update("no system metrics logged yet: a run samples its CPU, memory and GPU every sys_interval "
                        "seconds (0 turns it off)" if self.run is None or self.run.active else
                        "no system metrics: this run logged none (sys_interval = 0, or it ended before its first "
                        "sample)")
        shown = self._system_shown()
        box = self.query_one("#system")
        if shown:
            box.set_class(self.size.width >= WIDE, "-wide")
        names = {chart_of(key)[0] for key in (self.sys_points if new is None else new)}
        for name in sorted(names, key=_sys_rank):
            chart = self.sys_charts.get(name)
            if chart is None:
                if not shown:
                    continue
                chart = self.sys_charts[name] = MetricChart(name, "seconds")
                box.mount(chart)
                lines = {label or self.run_id: _xy(points) for key, points in self.sys_points.items()
                         for n, label in [chart_of(key)] if n == name}
                chart.set_series(dict(sorted(lines.items(), key=lambda item: item[0] == "total")))
            elif new is not None:
                for key, points in new.items():
                    n, label = chart_of(key)
                    if n == name:
                        chart.extend(label or self.run_id, points)

    def _show_tables(self, tables: dict[str, tuple[list[str], list[dict]]]) -> None:
        box = self.query_one("#tables")
        note = self.query_one("#tables-note", Static)
        box.remove_children(".run-table")
        note.display = not tables
        note.update("this run has no tables (recipes write per-class results, reports, grids here)")
        for name, (columns, rows) in tables.items():
            box.mount(Static(plain(f"{name} ({len(rows)} rows)", style="bold"), classes="run-table table-title"))
            box.mount(RecordTable(columns, rows, classes="run-table"))

    def apply_changes(self, message: RunsChanged) -> None:
        """Look at once when the run's status changed; new points and lines wait for the next poll."""
        row = message.rows.get(self.run.rid) if self.run is not None else None
        if row is not None and (row.run.status != self.run.status or self.run.status in FINAL_STATUSES):
            self._poll()

    def _poll(self) -> None:
        if self._updating or self.run is None:
            return
        self._updating = True
        steps = {key: int(chart.last_step.get(self.run_id, -1)) for key, chart in self.charts.items()}
        steps.update((key, int(points[-1][0])) for key, points in self.sys_points.items() if points)
        self.in_thread(actions.update_run, self.expt.project, self.run_id, steps, self.log_offset, self.tables_stamp,
                       group="update", exclusive=False, description="following the run")

    def on_run_updated(self, message: RunUpdated) -> None:
        self._updating = False
        if message.run.id != self.run_id:
            return
        was_active = self.run is not None and self.run.status not in FINAL_STATUSES
        self._show_run(message.run)
        new_sys = {}
        for key in chart_order(list(message.metrics), message.run.metric):
            points = message.metrics[key]
            if is_sys_key(key):
                self.sys_points.setdefault(key, []).extend(points)
                new_sys[key] = points
            else:
                self._chart(key).extend(message.run.id, points)
        if new_sys:
            self._show_system(new_sys)
        if message.log:
            self.query_one("#run-log", Log).write_lines(message.log)
        self.log_offset = message.log_offset
        if message.tables is not None:
            self._show_tables(message.tables)
            self.tables_stamp = message.tables_stamp
        if message.run.status in FINAL_STATUSES:
            self.poll.pause()
        elif not was_active:
            self.poll.resume()

    def worker_failed(self, worker) -> None:
        self._updating = False

    # -- keys --------------------------------------------------------------------------------------------

    def _switch_tab(self, step: int) -> None:
        tabs = self.query_one(TabbedContent)
        index = TABS.index(tabs.active) if tabs.active in TABS else 0
        tabs.active = TABS[(index + step) % len(TABS)]

    def action_next_tab(self) -> None:
        self._switch_tab(1)

    def action_previous_tab(self) -> None:
        self._switch_tab(-1)

    def action_stop(self) -> None:
        if self.run is None or self.run.status in FINAL_STATUSES:
            self.notify(f"{self.run_id} has ended: nothing to stop", severity="warning", markup=False)
            return
        self.expt.confirm_stop([self.run])

    def action_resume(self) -> None:
        if self.run is None or self.run.status not in RESUMABLE_STATUSES:
            self.notify(f"{self.run_id} is {self.run.status if self.run else 'loading'}: only stopped, crashed, "
                        "pruned or failed runs resume", severity="warning", markup=False)
            return
        self.expt.resume([self.run_id])

    def action_samples(self) -> None:
        self.expt.open_samples([self.run_id])

    def action_edit_tags(self) -> None:
        if self.run is None:
            return
        run_id = self.run_id

        def save(text: str | None) -> None:
            if text is not None:
                self.in_thread(actions.edit_run, self.expt.project, run_id, text.split(), None, group="edit",
                               exclusive=False, description="saving the tags")

        self.app.push_screen(EditTextScreen(f"tags of {run_id}", " ".join(self.run.tags),
                                            "tags apart by spaces; enter: save  escape: cancel"), save)

    def action_edit_note(self) -> None:
        if self.run is None:
            return
        run_id = self.run_id

        def save(text: str | None) -> None:
            if text is not None:
                self.in_thread(actions.edit_run, self.expt.project, run_id, None, text, group="edit",
                               exclusive=False, description="saving the note")

        self.app.push_screen(EditTextScreen(f"note on {run_id}", self.run.note,
                                            "one note per run (empty clears it); enter: save  escape: cancel"), save)


def bookkeeping_text(run: Run) -> Text:
    """The run's tags and note (t, n edit them): user text, shown inert."""
    text = Text.assemble(("tags ", "dim"), (inert(" ".join(run.tags)), "cyan") if run.tags else ("-", "dim"),
                         ("   note ", "dim"), inert(run.note) if run.note else ("- (t: tags, n: note)", "dim"))
    return text


def _shown_path(path: Path, root: Path) -> str:
    """Relative to the project when inside it (short, and the same on every machine)."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _xy(points: list[list[float]]) -> tuple[list[float], list[float]]:
    pairs = [(s, v) for s, v in points if v is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]
