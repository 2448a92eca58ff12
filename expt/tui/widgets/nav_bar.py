"""The top line: where you are, and what the project is doing (run counts, the scheduler)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from expt.tui.format import STATUS_STYLES, inert

SHOWN_STATUSES = ("running", "starting", "queued", "failed", "crashed", "stopped", "pruned", "completed")
DROP_ORDER = ("sched", "completed", "pruned", "stopped", "starting", "crashed", "failed", "queued")


class NavBar(Widget):
    """``expt  1 Runs  2 Experiments  3 Devices  > crumb        2 running  5 queued  ...  sched on``.

    The counts come from the app's ``counts`` and ``scheduler_running`` reactives, which the
    live feed keeps current; ``place`` is the screen's name, ``crumb`` what it shows.
    """

    DEFAULT_CSS = """
    NavBar {
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    counts: reactive[dict[str, int]] = reactive(dict, layout=False)
    scheduler_running: reactive[bool] = reactive(False)
    crumb: reactive[str] = reactive("")

    def __init__(self, place: str, crumb: str = "", *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False):
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.place = place
        self.set_reactive(NavBar.crumb, crumb)

    def on_mount(self) -> None:
        self.watch(self.app, "counts", self._set_counts)
        self.watch(self.app, "scheduler_running", self._set_scheduler)

    def _set_counts(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def _set_scheduler(self, running: bool) -> None:
        self.scheduler_running = running

    def render(self) -> Text:
        left = Text()
        left.append(" expt ", style="bold reverse")
        for key, place in (("1", "Runs"), ("2", "Experiments"), ("3", "Devices")):
            style = "bold underline" if place == self.place else "dim"
            left.append(f"  {key} ", style="dim")
            left.append(place, style=style)
        if self.crumb:
            left.append(" > ", style="dim")
            left.append(inert(self.crumb), style="bold")
        parts: dict[str, Text] = {}
        for status in SHOWN_STATUSES:
            n = self.counts.get(status, 0)
            if n:
                parts[status] = Text.assemble((f"{n} ", "bold"), (status, STATUS_STYLES.get(status, "")))
        parts["sched"] = Text("sched on", style="green") if self.scheduler_running else Text("sched off", style="dim")
        width = self.size.width
        right = Text("  ").join(parts.values()) + " "
        for name in DROP_ORDER:  # when it does not fit: the scheduler first, then the least pressing counts
            if left.cell_len + right.cell_len + 1 <= width or len(parts) == 1:
                break
            if parts.pop(name, None) is not None:
                right = Text("  ").join(parts.values()) + " "
        gap = max(1, width - left.cell_len - right.cell_len)
        return Text.assemble(left, " " * gap, right)
