"""A finetune run's few-shot training images: one row per class, its name first."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from expt.tui.format import plain
from expt.tui.widgets.picture import picture

ZOOMS = ((8, 4), (12, 6), (16, 8), (24, 12))  # picture width, height in cells
NAME_WIDTH = 14


class SampleGrid(VerticalScroll):
    """``classes``: class name -> pictures; ``counts``: class name -> images in the selection.

    As many pictures per row as the width allows; the rest are counted after the row.
    """

    zoom: reactive[int] = reactive(0, recompose=True)

    def __init__(self, classes: dict[str, list[Any]], counts: dict[str, int], mode: str = "auto", *,
                 name: str | None = None, id: str | None = None, disabled: bool = False):
        super().__init__(name=name, id=id, disabled=disabled)
        self.pictures, self.counts, self.mode = classes, counts, mode
        self._laid_out_width = 0

    def compose(self) -> ComposeResult:
        width, height = ZOOMS[self.zoom]
        room = max(1, (max(self._laid_out_width, 40) - NAME_WIDTH - 2) // (width + 1))
        for name, pictures in self.pictures.items():
            count = self.counts.get(name, len(pictures))
            label = plain(name, style="bold")
            label.append(f"\n{count} image{'s' * (count != 1)}", style="dim")
            if count > min(room, len(pictures)):
                label.append(f"\n{min(room, len(pictures))} shown", style="dim")
            with Horizontal(classes="class-row") as row:
                row.styles.height = height
                yield Static(label, classes="class-name")
                for image in pictures[:room]:
                    shown = picture(image, self.mode, classes="picture")
                    shown.styles.width, shown.styles.height = width, height
                    yield shown

    def on_resize(self) -> None:
        if abs(self.size.width - self._laid_out_width) > 2:
            self._laid_out_width = self.size.width
            self.refresh(recompose=True)

    def zoom_by(self, step: int) -> None:
        self.zoom = max(0, min(len(ZOOMS) - 1, self.zoom + step))
