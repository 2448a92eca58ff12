"""Samples: a finetune run's training images per class, or a metric run's nearest neighbours."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import Footer, Static

from expt.tui import actions
from expt.tui.format import inert, number, plain
from expt.tui.messages import SamplesLoaded
from expt.tui.screens.base import ExptScreen
from expt.tui.widgets.nav_bar import NavBar
from expt.tui.widgets.neighbour_view import NeighbourView
from expt.tui.widgets.sample_grid import SampleGrid


class SamplesScreen(ExptScreen):
    """The runs given, one at a time (``n``/``p`` to the next or previous one)."""

    HELP = ("The images a run trained on, one row per class (finetune runs save their few-shot draw), or, "
            "for a metric-learning run, each test image with its nearest training images, their classes and "
            "distances (x marks a query whose nearest neighbour has another class). Pictures use Kitty or "
            "Sixel graphics where the terminal has them, coloured half blocks otherwise.")

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("n", "step(1)", "Next run"),
        Binding("p", "step(-1)", "Previous run"),
        Binding("plus,equals_sign", "zoom(1)", "Bigger"),
        Binding("minus", "zoom(-1)", "Smaller"),
    ]

    def __init__(self, run_ids: list[str], index: int = 0):
        super().__init__()
        self.run_ids, self.index = run_ids, index

    @property
    def run_id(self) -> str:
        return self.run_ids[self.index]

    def compose(self) -> ComposeResult:
        yield NavBar("Runs", crumb=f"samples {self.run_id}")
        yield Static(plain(f" loading the samples of {self.run_id} ..."), id="samples-title")
        yield Container(id="samples-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        self.query_one(NavBar).crumb = f"samples {self.run_id}"
        self.in_thread(actions.load_samples, self.expt.project, self.run_id, group="samples",
                       description="loading the samples")

    async def on_samples_loaded(self, message: SamplesLoaded) -> None:
        body = self.query_one("#samples-body")
        await body.remove_children()
        run = message.run
        title = plain(f" {run.id}", style="bold")
        described = [f"{inert(k)}={number(v)}" for k, v in run.varying.items()]
        if described:
            title.append("  " + " ".join(described), style="cyan")
        if len(self.run_ids) > 1:
            title.append(f"   ({self.index + 1} of {len(self.run_ids)}: n/p for the others)", style="dim")
        mode = self.expt.image_mode
        if message.neighbours is not None:
            body.mount(NeighbourView(message.neighbours, message.pictures, mode))
        elif message.classes:
            total = sum(message.counts.values())
            title.append(f"\n {total} training images in {len(message.classes)} classes", style="dim")
            body.mount(SampleGrid(message.classes, message.counts, mode, id="sample-grid"))
        else:
            body.mount(Static(plain(f" {message.note}", style="dim"), id="samples-note"))
        self.query_one("#samples-title", Static).update(title)

    def action_step(self, step: int) -> None:
        if len(self.run_ids) > 1:
            self.index = (self.index + step) % len(self.run_ids)
            self.load()

    def action_zoom(self, step: int) -> None:
        for grid in self.query(SampleGrid):
            grid.zoom_by(step)
