"""A search experiment's study: progress, best so far, every trial sorted by the metric, importances.

Opened with ``s`` on the Experiments screen. The report comes from ``expt.core.study.report`` (the Optuna
journal in runs/.studies joined with runs.db) in a thread every few seconds while the screen is shown;
enter on a trial opens its run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from expt.formatting import sparkline
from expt.project import Project
from expt.tui.format import inert, number, plain, status_text
from expt.tui.screens.base import ExptScreen
from expt.tui.widgets.nav_bar import NavBar

RELOAD_EVERY = 2.0


@dataclass
class StudyLoaded(Message):
    """The study's report (None: no study yet)."""

    name: str
    report: dict[str, Any] | None


def load_study(project: Project, name: str, importances: bool = True) -> StudyLoaded:
    from expt.core import study
    from expt.store import Store

    with Store(project.db_path) as store:
        return StudyLoaded(name, study.report(store, project.runs_dir, name, importances=importances))


def progress_text(report: dict[str, Any] | None) -> Text:
    """One line: trials done / running / pruned of the total, best so far and its sparkline."""
    if report is None:
        return Text("no study yet: enter launches it", style="dim")
    counts = report["counts"]
    text = Text()
    text.append(f"{report['done']}/{report['trials']} trials", style="bold")
    text.append(f"  {counts['running']} running  {counts['pruned']} pruned")
    if counts["failed"]:
        text.append(f"  {counts['failed']} failed", style="red")
    if counts["paused"]:
        text.append(f"  {counts['paused']} paused", style="yellow")
    best = report.get("best")
    if best:
        text.append(f"  best {number(best['value'])} ", style="green")
        text.append(sparkline(report["best_so_far"], 24), style="cyan")
    text.append("  (active)" if report["active"] else f"  ({inert(report['note'] or 'paused')})", style="dim")
    return text


class StudyScreen(ExptScreen):
    """The trials of one study, best first."""

    HELP = ("A search experiment's Optuna study: the sampler picks each trial's params, each trial is one run. "
            "Trials are sorted by the study's metric (pruned ones by their last value); enter opens a trial's run. "
            "The importances are Optuna's over the completed trials.")

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, name: str):
        super().__init__()
        self.study_name = name
        self.report: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield NavBar("Experiments")
        yield Static(plain(f" study {self.study_name}: loading", style="bold"), id="study-header")
        yield DataTable(id="study-trials", cursor_type="row", zebra_stripes=True)
        yield Static("", id="study-importances")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self._reload()
        self.set_interval(RELOAD_EVERY, self._reload)

    def _reload(self) -> None:
        if self.is_current:
            self.in_thread(load_study, self.expt.project, self.study_name, group="study")

    def on_study_loaded(self, message: StudyLoaded) -> None:
        self.report = report = message.report
        header = self.query_one("#study-header", Static)
        title = Text(" study ", style="bold")
        title.append(inert(self.study_name), style="bold")
        if report is None:
            header.update(title + Text(": no study yet (launch it from the Experiments screen)", style="dim"))
            return
        title.append(inert(f"  {report['sampler']} sampler, {report['pruner']} pruner, {report['direction']} "
                           f"{report['metric']}\n "))
        header.update(title + progress_text(report))
        self._fill(report)
        importances = report.get("importances") or {}
        lines = Text(" importances: ", style="bold") if importances else Text(
            f" importances: {report.get('importances_note', '')}", style="dim")
        for key, value in importances.items():
            lines.append(f"{inert(key)} ")
            lines.append("█" * max(1, round(value * 20)), style="cyan")
            lines.append(f" {value:.2f}  ")
        self.query_one("#study-importances", Static).update(lines)

    def _fill(self, report: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        rows = report["trials_table"]
        keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
        columns = ["trial", "run", "status", report["metric"], "epochs", *keys]
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            for column in columns:
                table.add_column(inert(column), key=column)
        keep = table.cursor_row
        table.clear()
        for r in rows:
            value = number(r["value"]) if r["value"] is not None else (
                f"({number(r['last'])})" if r["last"] is not None else inert(r["note"][:30]))
            table.add_row(str(r["trial"]), inert(r["run"] or ""), status_text(r["status"]), value,
                          str(r["epochs"] or ""), *(number(r["params"].get(k)) for k in keys),
                          key=str(r["trial"]))
        if rows:
            table.move_cursor(row=min(keep, len(rows) - 1), animate=False)

    def action_cursor_down(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(DataTable).action_cursor_up()

    @on(DataTable.RowSelected, "#study-trials")
    def _open(self, event: DataTable.RowSelected) -> None:
        if self.report is None:
            return
        trial = int(str(event.row_key.value))
        row = next((r for r in self.report["trials_table"] if r["trial"] == trial), None)
        if row and row["run"]:
            self.expt.open_run(row["run"])
