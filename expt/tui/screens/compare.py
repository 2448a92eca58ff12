"""Compare: 2 to 8 runs or seed groups side by side: config differences, metrics (best marked), curves."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

from expt import analysis
from expt.store import Run
from expt.tui import actions
from expt.tui.format import inert, number, plain, spread, truncate
from expt.tui.messages import CompareLoaded, RunsChanged
from expt.tui.screens.base import ExptScreen
from expt.tui.widgets.metric_chart import MetricChart
from expt.tui.widgets.nav_bar import NavBar

RELOAD_EVERY = 1.0  # seconds between redraws while compared runs are training


def stat_text(value: analysis.Stat | None) -> str:
    if value is None:
        return ""
    if value.n == 1 or value.std == 0:
        return number(value.mean)
    return f"{number(value.mean)} ±{spread(value.ci95)}"


def mean_curve(curves: list[list[list[float]]]) -> tuple[list[float], list[float]]:
    """The mean over runs at each step any of them logged (what `expt compare` draws for a group)."""
    series = [{int(s): v for s, v in points if v is not None} for points in curves]
    steps = sorted(set().union(*series)) if series else []
    means = [sum(s[k] for s in series if k in s) / sum(1 for s in series if k in s) for k in steps]
    return [float(k) for k in steps], means


class CompareScreen(ExptScreen):
    """Columns are seed groups (runs that differ only in their seed) or, with ``g``, single runs."""

    HELP = ("Runs side by side. Config differences first; keys with the same value everywhere are folded into "
            "one line. Metrics show the mean and 95% confidence interval over the seeds of a group; * marks the "
            "best. The chart overlays one metric per epoch (mean over seeds for groups).")

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "next_metric", "Metric"),
        Binding("g", "toggle_groups", "Group seeds"),
        Binding("i", "samples", "Samples"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = run_ids
        self.grouped = True
        self.loaded: CompareLoaded | None = None
        self.metric: str | None = None

    def compose(self) -> ComposeResult:
        yield NavBar("Runs", crumb=f"compare {len(self.run_ids)} runs")
        with VerticalScroll(id="compare"):
            yield Static("loading ...", id="compare-title")
            yield DataTable(id="compare-config", show_cursor=False, zebra_stripes=True)
            yield Static("", id="compare-folded")
            yield Static("", id="compare-metrics-title")
            yield DataTable(id="compare-metrics", show_cursor=False, zebra_stripes=True)
            yield MetricChart("", id="compare-chart")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            table.can_focus = False
        self.query_one("#compare").focus()
        self.reload()

    def reload(self) -> None:
        self.in_thread(actions.load_compare, self.expt.project, self.run_ids, self.metric, group="compare",
                       description="loading the runs to compare")

    def apply_changes(self, message: RunsChanged) -> None:
        """Runs being compared while they train: redraw once a second at most."""
        if self.loaded is not None and {r.rid for r in self.loaded.runs} & set(message.rows):
            self.reload_soon(RELOAD_EVERY)

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.loaded = message
        self.metric = message.metric
        self._show()

    def _columns(self, runs: list[Run]) -> list[analysis.Group]:
        return analysis.group_by_seed(runs) if self.grouped else [analysis.Group([r]) for r in runs]

    def _show(self) -> None:
        message = self.loaded
        if message is None:
            return
        runs = message.runs
        groups = self._columns(runs)
        labels = [g.label + (f" n={len(g.runs)}" if len(g.runs) > 1 else "") for g in groups]
        grouped = any(len(g.runs) > 1 for g in groups)
        title = Text(f" {len(runs)} runs", style="bold")
        if grouped:
            title.append(f" in {len(groups)} seed groups", style="bold")
        title.append("   g: " + ("show every run" if self.grouped else "group the seeds"), style="dim")
        self.query_one("#compare-title", Static).update(title)

        params = [g.params for g in groups] if self.grouped else [r.params for r in runs]
        differing = analysis.differing_keys(params) if self.grouped else list(message.data["params_diff"])
        same = [k for k in dict.fromkeys(k for p in params for k in p) if k not in differing]
        config = self.query_one("#compare-config", DataTable)
        config.clear(columns=True)
        config.add_column("param", key="param")
        for i, label in enumerate(labels):
            config.add_column(plain(label), key=f"g{i}")
        for key in differing:
            config.add_row(plain(key, style="dim"), *(Text(number(p.get(key)), justify="right") for p in params))
        if not differing:
            config.add_row(Text("(no differences)", style="dim"), *("" for _ in labels))
        folded = f" {len(same)} identical keys: " + ", ".join(f"{inert(k)}={number(params[0].get(k))}" for k in same)
        self.query_one("#compare-folded", Static).update(Text(truncate(folded, max(20, self.size.width * 2 - 4)),
                                                              style="dim"))

        keys = analysis.numeric_summary_keys(runs)
        stats = {key: [g.stat(key) for g in groups] for key in keys}
        heading = " metrics" + (" (mean ±95% CI over seeds)" if grouped else "") + "   * best"
        self.query_one("#compare-metrics-title", Static).update(Text(heading, style="bold"))
        metrics = self.query_one("#compare-metrics", DataTable)
        metrics.clear(columns=True)
        metrics.add_column("metric", key="metric")
        for i, label in enumerate(labels):
            metrics.add_column(plain(label), key=f"g{i}")
        for key in keys:
            best = analysis.best_index([s.mean if s else None for s in stats[key]], analysis.direction(key, runs))
            cells = []
            for i, value in enumerate(stats[key]):
                text = stat_text(value)
                cells.append(Text(f"*{text}", style="bold green", justify="right") if best == i
                             else Text(text, justify="right"))
            metrics.add_row(plain(key, style="dim"), *cells)

        curves = message.curves
        if self.grouped:
            series = {g.label: mean_curve([curves.get(r.id, []) for r in g.runs]) for g in groups}
        else:
            series = {r.id: mean_curve([curves.get(r.id, [])]) for r in runs}
        title_text = f"{message.metric} per epoch" + (" (mean over seeds)" if grouped else "")
        if len(message.metrics) > 1:
            title_text += "   m: next metric"
        self.query_one("#compare-chart", MetricChart).set_series(series, title=title_text)

    def action_toggle_groups(self) -> None:
        self.grouped = not self.grouped
        self._show()

    def action_next_metric(self) -> None:
        if self.loaded is None or not self.loaded.metrics:
            return
        names = self.loaded.metrics
        index = names.index(self.metric) if self.metric in names else -1
        self.metric = names[(index + 1) % len(names)]
        self.reload()

    def action_scroll(self, direction: str) -> None:
        box = self.query_one("#compare", VerticalScroll)
        box.scroll_relative(y=3 if direction == "down" else -3, animate=False)

    def action_samples(self) -> None:
        self.expt.open_samples(self.run_ids)
