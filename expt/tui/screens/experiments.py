"""Experiments: what experiments.toml declares; enter launches one after a confirmation."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static
from textual.widgets.data_table import RowDoesNotExist

from expt.tui import actions
from expt.tui.format import inert, number, plain
from expt.tui.messages import ConfigLoaded, ExperimentRow, LaunchPlanned
from expt.tui.screens.base import ExptScreen
from expt.tui.screens.study import StudyLoaded, load_study, progress_text
from expt.tui.widgets.nav_bar import NavBar


class ExperimentsScreen(ExptScreen):
    """The experiments with recipe, sweep size and description; edits to the file show up at once."""

    HELP = ("The experiments of experiments.toml, re-read whenever the file changes. Launching queues "
            "every point of the sweep (as `expt run NAME --detach`): the runs are worker processes in "
            "their own session, so quitting the TUI or losing SSH stops none of them. A search experiment "
            "launches (or continues) its study; s shows its trials, best so far and importances. t opens the "
            "experiment's table of results (its runs pivoted on the swept keys), live while its runs go.")

    BINDINGS = [
        Binding("enter,l", "launch", "Launch", key_display="enter", priority=True),
        Binding("v", "view_runs", "Its runs"),
        Binding("t", "table", "Table"),
        Binding("s", "study", "Study", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("escape", "app.go('runs')", "Runs", show=False),
        Binding("tab", "app.go('devices')", "Next screen", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="experiments")
        self.config: ConfigLoaded | None = None
        self.studies: dict[str, Text] = {}  # a search experiment's progress line

    def compose(self) -> ComposeResult:
        yield NavBar("Experiments")
        yield DataTable(id="experiments-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="experiment-detail")
        yield Static("", id="config-problems")
        yield Footer(compact=True)

    @property
    def table(self) -> DataTable:
        return self.query_one("#experiments-table", DataTable)

    def on_mount(self) -> None:
        table = self.table
        for key, label in (("name", "experiment"), ("recipe", "recipe"), ("runs", "runs"),
                           ("description", "description")):
            table.add_column(label, key=key)
        table.focus()
        if self.config is not None:
            self._show(self.config)
        self.set_interval(2.0, self._study_progress)

    def apply_config(self, message: ConfigLoaded) -> None:
        """Called by the app for every ConfigLoaded, shown or not."""
        self.config = message
        if self.is_mounted:
            self._show(message)

    def _show(self, message: ConfigLoaded) -> None:
        table = self.table
        keep = self.current_name
        table.clear()
        for row in message.experiments:
            runs = Text(str(row.runs) + (f" +{row.skipped} skipped" if row.skipped else ""), justify="right")
            table.add_row(plain(row.name, style="bold"), plain(row.recipe), runs, plain(row.description), key=row.name)
        if keep is not None and keep in {r.name for r in message.experiments}:
            table.move_cursor(row=table.get_row_index(keep), animate=False)
        problems = self.query_one("#config-problems", Static)
        if message.problems:
            text = plain(f"{Path(message.path).name} cannot be used until this is fixed (the runs go on):\n",
                        style="bold red")
            for line in message.problems:
                text.append(inert(f"  {line}\n"), style="red")
            problems.update(text)
            problems.display = True
        else:
            problems.display = False
        self._describe()

    @property
    def current_name(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _experiment(self, name: str | None) -> ExperimentRow | None:
        if self.config is None or name is None:
            return None
        return next((e for e in self.config.experiments if e.name == name), None)

    @on(DataTable.RowHighlighted, "#experiments-table")
    def _highlighted(self) -> None:
        self._describe()
        self._study_progress()

    def _describe(self) -> None:
        detail = self.query_one("#experiment-detail", Static)
        row = self._experiment(self.current_name)
        if row is None:
            detail.update("" if self.config is None or self.config.problems else " no experiments in the file")
            return
        text = Text(" ")
        text.append(inert(row.name), style="bold")
        text.append(inert(f" ({row.recipe}): "))
        sweep = [f"{inert(key)}={number(values)}" for key, values in row.sweep.items()]
        if row.repeat > 1:
            sweep.append(f"{row.repeat} seeds")
        if row.search:
            text.append(f"a study: {row.runs} trials, {inert(row.search)}", style="cyan")
            text.append("  (s: the study)", style="dim")
            text.append("\n ")
            text.append_text(self.studies.get(row.name) or Text("", style="dim"))
        else:
            text.append(" x ".join(sweep) if sweep else "one point", style="cyan")
            text.append(f" = {row.runs} run{'s' * (row.runs != 1)}")
        if row.description:
            text.append(inert(f"\n {row.description}"), style="dim")
        detail.update(text)

    def action_cursor_down(self) -> None:
        self.table.action_cursor_down()

    def action_cursor_up(self) -> None:
        self.table.action_cursor_up()

    @on(DataTable.RowSelected, "#experiments-table")
    def _row_clicked(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        if not self.is_current:
            return  # a key typed ahead of leaving this screen (1 then enter) launches nothing
        name = self.current_name
        if name is None:
            self.notify("no experiment to launch", severity="warning")
            return
        self.in_thread(actions.plan_launch, self.expt.project, name, group="plan", description=f"planning {name}")

    def launch_named(self, name: str) -> None:
        table = self.table
        try:
            table.move_cursor(row=table.get_row_index(name), animate=False)
        except RowDoesNotExist:  # the file changed meanwhile
            self.notify(f"no experiment {name!r} in the file any more", severity="warning", markup=False)
            return
        self.action_launch()

    def on_launch_planned(self, message: LaunchPlanned) -> None:
        from expt.tui.screens.confirm import ConfirmScreen

        skipped = f" ({message.skipped} sweep points skipped)" if message.skipped else ""
        body = (f"{message.runs} run{'s' * (message.runs != 1)}{skipped} on {message.where}.\n"
                "They run as background workers: quitting the TUI or losing SSH stops none of them.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.expt.launch(message.name)

        if not self.is_current:
            return  # the user went elsewhere while the plan was being checked
        self.app.push_screen(ConfirmScreen(f"Launch {message.name}?", body, yes="Launch"), answered)

    def _study_progress(self) -> None:
        row = self._experiment(self.current_name)
        if self.is_current and row is not None and row.search:
            self.in_thread(load_study, self.expt.project, row.name, False, group="study")

    def on_study_loaded(self, message: StudyLoaded) -> None:
        self.studies[message.name] = progress_text(message.report)
        if message.name == self.current_name:
            self._describe()

    def action_study(self) -> None:
        from expt.tui.screens.study import StudyScreen

        row = self._experiment(self.current_name)
        if row is None or not row.search:
            self.notify("not a search experiment: it has no [experiments.NAME.search] table", severity="warning")
            return
        self.app.push_screen(StudyScreen(row.name))

    def action_table(self) -> None:
        """The pivot table of the experiment under the cursor (as `expt table NAME`)."""
        name = self.current_name
        if name is None:
            self.notify("no experiment to tabulate", severity="warning")
            return
        self.expt.open_table(name)

    def action_view_runs(self) -> None:
        name = self.current_name
        if name is not None:
            self.expt.show_runs(f"experiment={name}")
