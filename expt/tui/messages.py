"""The messages the TUI's threads send to its screens: plain data, built off the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from expt.core.devices import CpuSample, DeviceRow
from expt.store import Run
from expt.tui.devices import DeviceTrace
from expt.tui.rows import RunRow


@dataclass
class RunsChanged(Message):
    """Runs whose rows changed in runs.db between ``since`` and ``version`` (sent by the live feed)."""

    since: int
    version: int
    rows: dict[int, RunRow]
    counts: dict[str, int]
    total: int
    scheduler: bool

    def can_replace(self, message: Message) -> bool:
        # A newer copy covers everything an older one does: both start at the version the app last took.
        return isinstance(message, RunsChanged) and message.since <= self.since and message.version <= self.version


@dataclass
class DevicesSampled(Message):
    """The machine's devices now with their recent history, the runs on them and the queue (sent by the live feed
    every few seconds while the Devices screen is shown)."""

    devices: list[DeviceRow]
    history: dict[str, DeviceTrace]  # device name -> its last samples
    queue: list[Run]  # the first runs waiting, in the order they start
    queued: int  # how many wait in all
    cpu: CpuSample | None
    nvml_reason: str  # why there are no GPUs to show ("no NVIDIA driver ..."), "" when NVML answered
    every: float  # seconds between samples
    problem: str = ""  # the sample failed: why (the rest is empty)

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DevicesSampled)


@dataclass(frozen=True)
class ExperimentRow:
    """One experiment of experiments.toml as the experiments screen lists it."""

    name: str
    recipe: str
    description: str
    runs: int
    skipped: int
    sweep: dict[str, list[Any]]
    repeat: int
    search: str = ""  # a search experiment: "tpe sampler over lr, weight_decay" (runs: its trials)


@dataclass
class ConfigLoaded(Message):
    """experiments.toml was read (at start and after every edit): its experiments, or its problems."""

    path: str
    experiments: list[ExperimentRow]
    problems: list[str]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConfigLoaded)


@dataclass
class RunsLoaded(Message):
    """A page of runs matching the filter, newest first; ``append`` when it extends the shown page."""

    rows: list[RunRow]
    total: int
    matching: int
    version: int
    append: bool = False


@dataclass
class RunLoaded(Message):
    """One run's detail: its row, every metric, the log's tail and its tables."""

    run: Run
    metrics: dict[str, list[list[float]]]
    log: list[str]
    log_offset: int
    tables: dict[str, tuple[list[str], list[dict[str, Any]]]]
    tables_stamp: tuple[float, ...]


@dataclass
class RunUpdated(Message):
    """New data for an open run: its row, metric points after the ones shown, new log lines."""

    run: Run
    metrics: dict[str, list[list[float]]]
    log: list[str]
    log_offset: int
    tables: dict[str, tuple[list[str], list[dict[str, Any]]]] | None = None
    tables_stamp: tuple[float, ...] = ()


@dataclass
class CompareLoaded(Message):
    """The runs to compare with ``analysis.compare_data`` and the curves of one metric."""

    runs: list[Run]
    data: dict[str, Any]
    metric: str
    metrics: list[str]
    curves: dict[str, list[list[float]]]


@dataclass
class SamplesLoaded(Message):
    """A run's training images per class, or the nearest neighbours it recorded, or neither."""

    run: Run
    classes: dict[str, list[Any]] = field(default_factory=dict)  # class name -> PIL images
    counts: dict[str, int] = field(default_factory=dict)  # class name -> images in the selection
    neighbours: dict[str, Any] | None = None  # neighbours.json
    pictures: dict[str, Any] = field(default_factory=dict)  # its image paths -> PIL images
    note: str = ""


@dataclass
class LaunchPlanned(Message):
    """What launching an experiment would do, for the confirmation."""

    name: str
    runs: int
    where: str
    skipped: int


@dataclass
class ActionDone(Message):
    """A launch, stop or resume finished; ``lines`` say what happened."""

    action: str
    lines: list[str]
    run_ids: list[str] = field(default_factory=list)
