"""Devices: the machine at a glance: each GPU (or the CPU) with its recent load and memory, its runs and free
slots, then the queue."""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Footer, Static

from expt.tui.devices import HISTORY
from expt.tui.format import number, plain
from expt.tui.messages import DevicesSampled
from expt.tui.screens.base import ExptScreen
from expt.tui.widgets.device_card import DeviceCard
from expt.tui.widgets.nav_bar import NavBar

QUEUE_LINES = 12  # queued runs listed (the count says how many wait in all)


def card_id(name: str) -> str:
    return "device-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


class DevicesScreen(ExptScreen):
    """Filled by the live feed's ``DevicesSampled`` messages, which it asks for only while it is shown."""

    HELP = ("The machine: every GPU NVML sees (also those no expt run uses), or the CPU where there is none, with "
            "utilisation and memory over the last minutes, power, temperature, the runs on it with their load "
            "(GPU utilisation or CPU percent from their sys/ metrics) and the pool's free slots; then the runs "
            "waiting in the queue, in the order they start. Sampled every few seconds while this screen is shown.")

    BINDINGS = [
        Binding("escape", "app.go('runs')", "Runs", show=False),
        Binding("tab", "app.go('runs')", "Next screen", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="devices")
        self.sampled: DevicesSampled | None = None
        self.cards: dict[str, DeviceCard] = {}
        self._shown: dict[str, Text | str] = {}  # what each line shows: a line that did not change is not touched

    def compose(self) -> ComposeResult:
        yield NavBar("Devices")
        with VerticalScroll(id="devices-body"):
            yield Static("sampling the machine ...", id="devices-note")
            yield Vertical(id="device-cards")
            yield Static("", id="devices-host")
            yield Static("", id="devices-reason")
            yield Static("", id="queue")
        yield Static("", id="devices-status", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#devices-body").focus()
        if self.sampled is not None:
            self._show(self.sampled)

    def on_screen_resume(self) -> None:
        self.expt.feed.want_devices(True)

    def on_screen_suspend(self) -> None:
        self.expt.feed.want_devices(False)

    def apply_devices(self, message: DevicesSampled) -> None:
        """Called by the app for every DevicesSampled (they come only while this screen is shown)."""
        self.sampled = message
        if self.is_mounted:
            self._show(message)

    def _set(self, name: str, content: Text | str, display: bool = True) -> None:
        """Show ``content`` in the line ``#name``, laying the screen out again only when it changed."""
        line = self.query_one(f"#{name}", Static)
        line.display = display
        if display and self._shown.get(name) != content:
            self._shown[name] = content
            line.update(content)

    def _show(self, message: DevicesSampled) -> None:
        self._set("devices-note", plain(f" {message.problem}", style="bold red"), bool(message.problem))
        box = self.query_one("#device-cards")
        names = [d.name for d in message.devices]
        for name in [n for n in self.cards if n not in names]:
            self.cards.pop(name).remove()
        for device in message.devices:
            trace = message.history.get(device.name)
            card = self.cards.get(device.name)
            if card is None:
                card = self.cards[device.name] = DeviceCard(device, trace, id=card_id(device.name))
                box.mount(card)
            else:
                card.show(device, trace)
        cpu = message.cpu
        gpus = any(d.name.startswith("cuda:") for d in message.devices)
        if gpus and cpu is not None:  # on a GPU machine, the CPU in one line (a GPU waiting for data: a busy CPU?)
            self._set("devices-host", Text.assemble(
                " ", ("cpu", "bold"), f"  {cpu.cores} cores {cpu.percent:.0f}%  memory {cpu.mem_used_mb / 1024:.1f}/"
                f"{cpu.mem_total_mb / 1024:.1f} GiB  load {cpu.load[0]:.1f}"))
        else:
            self._set("devices-host", "", False)
        self._set("devices-reason", plain(f" {message.nvml_reason}: the CPU is shown instead", style="yellow"),
                  bool(message.nvml_reason) and not message.problem)
        self._set("queue", queue_text(message))
        minutes = HISTORY * message.every / 60
        self._set("devices-status", f" sampled every {number(message.every)} s; util and mem over the last "
                  f"{minutes:.0f} min  |  esc: runs")


def queue_text(message: DevicesSampled) -> Text:
    if not message.queued:
        return Text.assemble(" ", ("queue", "bold"), ("  nothing waits", "dim"))
    text = Text.assemble(" ", ("queue", "bold"), f"  {message.queued} waiting, in the order they start")
    shown = message.queue[:QUEUE_LINES]
    width = max((len(r.id) for r in shown), default=0)
    for i, run in enumerate(shown, 1):
        text.append(f"\n {i:>4}  ")
        text.append_text(plain(run.id.ljust(width), style="bold"))
        varying = "  ".join(f"{k}={number(v)}" for k, v in run.varying.items())
        text.append_text(plain(f"  {run.experiment}" + (f"  {varying}" if varying else ""), style="cyan"))
    if message.queued > len(shown):
        text.append(f"\n       ... and {message.queued - len(shown)} more", style="dim")
    return text
