"""One device of the machine on the Devices screen: three lines, as wide as the screen."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from expt.core.devices import DeviceRow
from expt.tui.devices import DeviceTrace
from expt.tui.format import binned, gib, inert, levels, mean, plain, truncate

UTIL_STYLE = "green"
MEM_STYLE = "cyan"
FULL = 90.0  # percent of a device's memory from which it is shown in red (a run close to out-of-memory)
LOW = 50.0  # a GPU run's utilisation under which it is shown in yellow (likely waiting for data)
IDLE = 5.0  # utilisation under which a device without runs is idle
MEM_WIDTH = 13  # "30.1/40.0 GiB"


class DeviceCard(Widget):
    """``cuda:0  NVIDIA A100  250 W  65°C  1 of 2 free``, then utilisation and memory as fixed-scale sparklines
    over the device's recent samples (bins of several samples on a narrow screen: utilisation their mean, memory
    their peak), then the runs on it with their load (and processes of others).

    ``show(device, trace)`` replaces what it shows; it lays the screen out again only when its height may change.
    """

    DEFAULT_CSS = """
    DeviceCard {
        height: auto;
        margin-bottom: 1;
    }
    """

    def __init__(self, device: DeviceRow, trace: DeviceTrace | None = None, *, name: str | None = None,
                 id: str | None = None, classes: str | None = None, disabled: bool = False):
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.device = device
        self.trace = trace or DeviceTrace()

    def show(self, device: DeviceRow, trace: DeviceTrace | None = None) -> None:
        relayout = (device.runs, device.others) != (self.device.runs, self.device.others)
        self.device, self.trace = device, trace or DeviceTrace()
        self.refresh(layout=relayout)

    def render(self) -> Text:
        width = max(48, self.size.width or 80)
        return Text("\n").join([self._title(width), self._lines(width), self._runs()])

    def _title(self, width: int) -> Text:
        d = self.device
        right = []
        used = self._mem_percent()
        if used is not None and used >= FULL:
            right.append((f"{gib(d.mem_total_mb - d.mem_used_mb)} GiB left", "bold red"))  # type: ignore[operator]
        if d.power_w is not None:
            right.append((f"{d.power_w:.0f} W", ""))
        if d.temperature_c is not None:
            right.append((f"{d.temperature_c:.0f}°C", ""))
        right.append((f"{d.free} of {d.slots} free", "bold" if d.free else "") if d.slots else
                     ("not in the pool", "dim"))
        tail = Text("  ").join(Text(text, style=style) for text, style in right) + " "
        head = Text.assemble(" ", (inert(d.name), "bold"), "  ")
        room = width - head.cell_len - tail.cell_len - 2
        head.append(truncate(inert(d.label), max(0, room)))
        return Text.assemble(head, " " * max(2, width - head.cell_len - tail.cell_len), tail)

    def _mem_percent(self) -> float | None:
        d = self.device
        return d.mem_used_mb / d.mem_total_mb * 100 if d.mem_used_mb is not None and d.mem_total_mb else None

    def _lines(self, width: int) -> Text:
        d, trace = self.device, self.trace
        fixed = len("   util ") + len(" 100%") + len("   mem ") + 1 + MEM_WIDTH + 1
        spark = max(4, (width - fixed) // 2)
        util = levels(binned(trace.util, trace.first, spark, mean)).ljust(spark)
        memory = levels(binned(trace.mem, trace.first, spark, max)).ljust(spark)
        used = self._mem_percent()
        mem_style = "bold red" if used is not None and used >= FULL else MEM_STYLE
        mem_text = f"{gib(d.mem_used_mb)}/{gib(d.mem_total_mb)} GiB" if used is not None else ""
        return Text.assemble(("   util ", "dim"), (util, UTIL_STYLE),
                             (f" {d.util:3.0f}%" if d.util is not None else "    -", "bold"),
                             ("   mem ", "dim"), (memory, mem_style), " ", (mem_text.rjust(MEM_WIDTH), mem_style))

    def _runs(self) -> Text:
        d = self.device
        text = Text("   ")
        if not d.runs:
            idle = not d.others and d.util is not None and d.util < IDLE
            text.append("idle: no runs" if idle else "no expt runs", style="dim")
        else:
            text.append("runs ", style="dim")
            gpu = d.name.startswith("cuda:")
            for i, run_id in enumerate(d.runs):
                if i:
                    text.append("  ")
                text.append_text(plain(run_id, style="bold"))
                load = d.run_load.get(run_id)
                if load is not None:
                    text.append(f" {load:.0f}%", style="yellow" if gpu and load < LOW else "")
        if d.others:
            others = f"+{d.others} other process{'es' * (d.others != 1)}"
            text.append(("   " if d.runs else "  ") + others, style="magenta")
        return text
