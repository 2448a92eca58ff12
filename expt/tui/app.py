"""The expt TUI: the app, its routing between screens, and the actions every screen shares.

``create_app(project)`` is the one way to build it, for ``expt tui`` and for the tests. The
screens live in ``screens/``, the widgets in ``widgets/``, the messages in ``messages.py``;
the live data comes from ``feed.LiveFeed`` and every blocking call runs in a thread worker
(``actions.py``). Runs started here are detached workers: quitting stops none of them.
"""

from __future__ import annotations

import gc
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterable

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from expt.errors import ExptError
from expt.project import Project
from expt.store import Run
from expt.tui import actions
from expt.tui.feed import LiveFeed
from expt.tui.format import as_markup, inert
from expt.tui.messages import ActionDone, ConfigLoaded, DevicesSampled, RunsChanged
from expt.tui.screens.devices import DevicesScreen
from expt.tui.screens.experiments import ExperimentsScreen
from expt.tui.screens.runs import RunsScreen
from expt.tui.widgets.picture import MODES as IMAGE_MODES

if TYPE_CHECKING:
    from expt.tui.screens.run_detail import RunDetailScreen


class ExptApp(App[None]):
    """Runs (home), Experiments and Devices, with run detail, compare and samples pushed on top."""

    CSS_PATH = "app.tcss"
    TITLE = "expt"
    BINDINGS = [
        Binding("q", "quit_app", "Quit", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("1", "go('runs')", "Runs", show=False),
        Binding("2", "go('experiments')", "Experiments", show=False),
        Binding("3", "go('devices')", "Devices", show=False),
    ]

    counts: reactive[dict[str, int]] = reactive(dict)
    scheduler_running: reactive[bool] = reactive(False)

    def __init__(self, project: Project, *, interval: float = 0.2, image_mode: str = "auto"):
        super().__init__()
        self.project = project
        self.image_mode = image_mode if image_mode in IMAGE_MODES else "auto"
        self.feed = LiveFeed(self, project, interval)
        self.last_input = 0.0  # when the last key arrived: live updates wait a moment for the user
        self._gc_thresholds: tuple[int, ...] | None = None
        self.runs_screen = RunsScreen()
        self.experiments_screen = ExperimentsScreen()
        self.devices_screen = DevicesScreen()
        self.places: dict[str, Screen] = {"experiments": self.experiments_screen, "devices": self.devices_screen}
        self.detail_screen: RunDetailScreen | None = None

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.last_input = time.monotonic()
        await super().on_event(event)

    def get_default_screen(self) -> Screen:
        return self.runs_screen

    def on_mount(self) -> None:
        for name, screen in self.places.items():
            self.install_screen(screen, name)
        self.feed.start()

    def started(self) -> None:
        """The first page is on screen: move everything built so far out of the garbage collector's way
        (a full collection over Textual's widgets and styles pauses the app for 100-300 ms)."""
        self._gc_thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(5_000, 10, 20)  # fewer, not longer, collections: each redraw makes thousands of objects

    def on_unmount(self) -> None:
        self.feed.stop()
        if self._gc_thresholds is not None:  # as it was (the tests run many apps in one process)
            gc.unfreeze()
            gc.set_threshold(*self._gc_thresholds)

    # -- live data -------------------------------------------------------------------------------------

    def on_runs_changed(self, message: RunsChanged) -> None:
        self.feed.acknowledge(message.version)
        self.counts = message.counts
        self.scheduler_running = message.scheduler
        self.runs_screen.apply_changes(message)
        for screen in self.screen_stack:  # a run's detail or a comparison that shows one of these runs
            if screen is not self.runs_screen and hasattr(screen, "apply_changes"):
                screen.apply_changes(message)

    def on_config_loaded(self, message: ConfigLoaded) -> None:
        self.experiments_screen.apply_config(message)

    def on_devices_sampled(self, message: DevicesSampled) -> None:
        self.devices_screen.apply_devices(message)

    # -- navigation ------------------------------------------------------------------------------------

    def action_go(self, place: str) -> None:
        """One of the three places (runs, experiments, devices), over the runs screen and nothing else."""
        target = self.places.get(place)  # None: the runs screen, at the bottom of the stack
        while len(self.screen_stack) > 1 and self.screen is not target:
            self.pop_screen()
        if target is not None and self.screen is not target:
            self.push_screen(place)

    def show_runs(self, filter_text: str) -> None:
        self.action_go("runs")
        self.runs_screen.set_filter(filter_text)

    def open_run(self, run_id: str) -> None:
        """The run detail screen is built once and kept (installed); opening a run points it at the run."""
        from expt.tui.screens.run_detail import RunDetailScreen

        row = self.runs_screen.table.row_for(run_id)
        run = row.run if row else None
        if self.detail_screen is None:
            self.detail_screen = RunDetailScreen(run_id, run)
            self.install_screen(self.detail_screen, "run-detail")
        elif self.detail_screen in self.screen_stack:
            while self.screen is not self.detail_screen:
                self.pop_screen()
            self.detail_screen.show_run(run_id, run)
            return
        else:
            self.detail_screen.show_run(run_id, run)
        self.push_screen("run-detail")

    def open_compare(self, run_ids: list[str]) -> None:
        from expt.tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_ids))

    def open_table(self, name: str) -> None:
        """The pivot table of experiment ``name``'s runs (``t`` on the Experiments screen, the palette)."""
        from expt.tui.screens.pivot import PivotScreen

        self.push_screen(PivotScreen(name))

    def open_samples(self, run_ids: list[str]) -> None:
        from expt.tui.screens.samples import SamplesScreen

        self.push_screen(SamplesScreen(run_ids))

    def action_help(self) -> None:
        from expt.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen.for_screen(self.screen))

    def action_quit_app(self) -> None:
        busy = [w for w in self.workers if w.group == "actions" and w.state in (WorkerState.PENDING,
                                                                                 WorkerState.RUNNING)]
        if not busy:
            self.exit()
            return
        from expt.tui.screens.confirm import ConfirmScreen

        body = (f"{busy[0].description} is still being sent to the runs; quitting now may leave it half done.\n"
                "Runs already started keep running either way.")
        self.push_screen(ConfirmScreen("Quit now?", body, yes="Quit"),
                         lambda yes: self.exit() if yes else None)

    # -- actions on runs (app workers: they outlive the screen that asked) --------------------------------

    def act(self, fn: Callable[..., Message], *args: Any, description: str) -> Worker:
        def work() -> Message:
            result = fn(*args)
            self.post_message(result)
            return result

        return self.run_worker(work, thread=True, group="actions", exit_on_error=False, description=description)

    def launch(self, name: str) -> None:
        self.act(actions.launch, self.project, name, description=f"launching {name}")

    def resume(self, run_ids: list[str]) -> None:
        self.act(actions.resume, self.project, run_ids, description=f"resuming {', '.join(run_ids)}")

    def confirm_stop(self, runs: list[Run]) -> None:
        from expt.tui.screens.confirm import ConfirmScreen

        names = ", ".join(f"{r.id} ({r.status})" for r in runs[:6]) + (" ..." if len(runs) > 6 else "")
        body = (f"{names}\nQueued runs are cancelled; running ones save a checkpoint and end 'stopped' "
                "(r resumes them).")
        ids = [r.id for r in runs]

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(actions.stop, self.project, ids, description=f"stopping {', '.join(ids)}")

        self.push_screen(ConfirmScreen(f"Stop {len(runs)} run{'s' * (len(runs) != 1)}?", body, yes="Stop"),
                         answered)

    def on_action_done(self, message: ActionDone) -> None:
        for line in message.lines:
            self.notify(inert(line), title=message.action, timeout=6, markup=False)
        self.feed.poke()
        if message.action == "launch":
            self.action_go("runs")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.report_error(event.worker.error, event.worker.description)

    def report_error(self, error: BaseException, what: str = "") -> None:
        """A user's mistake is its one-line message(s); anything else says what failed and why."""
        if isinstance(error, ExptError):
            for line in str(error).splitlines() or [type(error).__name__]:
                self.notify(inert(line), severity="error", timeout=10, markup=False)
            return
        self.log.error("".join(traceback.format_exception(error)))
        self.notify(inert(f"{what or 'a task'} failed: {type(error).__name__}: {error}"), severity="error",
                    timeout=10, markup=False)

    # -- the command palette ---------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Runs", "The runs table (1)", lambda: self.action_go("runs"))
        yield SystemCommand("Experiments", "The experiments of experiments.toml (2)",
                            lambda: self.action_go("experiments"))
        yield SystemCommand("Devices", "The GPUs (or the CPU): load, memory, their runs, free slots; the queue (3)",
                            lambda: self.action_go("devices"))
        yield SystemCommand("Help", "The keys of this screen (?)", self.action_help)
        for status in ("running", "queued", "failed", "completed", "stopped"):
            yield SystemCommand(f"Show {status} runs", f"Filter the runs table: status={status}",
                                lambda s=status: self.show_runs(f"status={s}"), discover=False)
        yield SystemCommand("Show all runs", "Clear the runs filter", lambda: self.show_runs(""), discover=False)
        config = self.experiments_screen.config
        for experiment in config.experiments if config else []:
            described = as_markup(f"{experiment.runs} runs: {experiment.description}")
            yield SystemCommand(f"Launch {experiment.name}", described,
                                lambda name=experiment.name: self._launch_from_palette(name))
            yield SystemCommand(as_markup(f"Table of experiment {experiment.name}"),
                                "Its runs pivoted on the swept keys: mean ± 95% CI per cell, live (t on Experiments)",
                                lambda name=experiment.name: self.open_table(name))
        if isinstance(screen, RunsScreen) or screen is self.runs_screen:
            for name, action, what in (("Compare selected runs", "compare", "c"), ("Stop", "stop", "s"),
                                       ("Resume", "resume", "r"), ("Samples", "samples", "i"),
                                       ("Sort runs", "sort", "o"), ("Filter runs", "filter", "/"),
                                       ("Select every run shown", "select_all", "a")):
                yield SystemCommand(name, f"On the runs table ({what})",
                                    lambda a=action: getattr(self.runs_screen, f"action_{a}")())
        for row in list(self.runs_screen.table.rows_by_rid.values())[:500]:
            yield SystemCommand(as_markup(f"Open {row.id}"), as_markup(f"{row.run.status} {row.run.experiment}"),
                                lambda i=row.id: self.open_run(i), discover=False)
        yield SystemCommand("Quit", "Leave the TUI; runs go on (q)", self.action_quit_app)
        yield from (c for c in super().get_system_commands(screen) if c.title in ("Theme", "Screenshot", "Keys"))

    def _launch_from_palette(self, name: str) -> None:
        self.action_go("experiments")
        self.call_after_refresh(self.experiments_screen.launch_named, name)


def create_app(project: Project, *, interval: float = 0.2, image_mode: str = "auto") -> ExptApp:
    """The app for ``project``: ``interval`` bounds the live refresh (seconds between looks at runs.db);
    ``image_mode`` pins how pictures are drawn (auto, halfcell, sixel, tgp, unicode)."""
    return ExptApp(project, interval=interval, image_mode=image_mode)
