"""The live feed: one thread that keeps runs.db current and tells the app what changed.

Every ``interval`` seconds (bounded: five times a second by default) the thread, with its own
Store connection, reaps dead workers, ingests the new lines of the active runs' metrics.jsonl
and, when runs.db's change counter moved, posts one ``RunsChanged`` with the rows changed
since the version the app last took (``acknowledge``). A newer message therefore covers an
older one still queued, and replaces it (``can_replace``): a slow screen gets the latest
state, never a backlog. It also watches experiments.toml and posts ``ConfigLoaded`` after
each edit. While the Devices screen is shown (``want_devices``) it also samples the machine every
``DEVICES_EVERY`` seconds (NVML and psutil, plus the runs on each device from runs.db) and posts
``DevicesSampled``. The event loop never waits for SQLite, the disk or NVML: a locked database or a
slow file system delays the next message, nothing else.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from expt.errors import ExptError
from expt.project import Project
from expt.store import Store
from expt.tui.devices import DEVICES_EVERY, QUEUE_SHOWN, DeviceHistory
from expt.tui.messages import ConfigLoaded, DevicesSampled, ExperimentRow, RunsChanged
from expt.tui.rows import load_rows

if TYPE_CHECKING:
    from textual.app import App

    from expt.core.devices import CpuSample, GpuSample, MachineSampler

REAP_EVERY = 2.0  # seconds between looks for workers that died without a final status
BACKLOG = 32  # messages waiting in the app's queue above which the feed skips a round


class LiveFeed:
    """Ingest, reap and watch in a daemon thread; post plain-data messages to ``app``."""

    def __init__(self, app: App, project: Project, interval: float = 0.2):
        self.app = app
        self.project = project
        self.interval = interval
        self.acknowledged = -1  # the version the app has applied (-1: none yet)
        self.ticks = 0
        self.errors = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_stamp: tuple[int, int] | None = None
        self._devices_wanted = False
        self._devices_next = 0.0  # when the next sample of the machine is due (monotonic)
        self._sampler: MachineSampler | None = None  # made in the thread, on the first sample
        self.history = DeviceHistory()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="expt-live-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end and wait a little (it is a daemon: a stuck read never holds the exit)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def acknowledge(self, version: int) -> None:
        """The app applied everything up to ``version``."""
        self.acknowledged = max(self.acknowledged, version)

    def poke(self) -> None:
        """Look now rather than at the next tick (after a launch, stop or resume)."""
        self._wake.set()

    def want_devices(self, wanted: bool) -> None:
        """Sample the machine every DEVICES_EVERY seconds, from the next tick on (the Devices screen is shown),
        or no more (it was left)."""
        self._devices_wanted = wanted
        if wanted:
            self._devices_next = 0.0
            self._wake.set()

    # -- the thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        from expt.core import scheduler

        store: Store | None = None
        posted = -1
        owner: bool | None = None
        last_reap = 0.0
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    if store is None:
                        store = Store(self.project.db_path)
                        if self.acknowledged < 0:
                            self.acknowledged = store.version()
                    self._watch_config()
                    if self._backlog() < BACKLOG:
                        if started - last_reap >= REAP_EVERY:
                            scheduler.reap(store)
                            last_reap = started
                        store.ingest()
                        version = store.version()
                        has_owner = scheduler.has_owner(self.project)
                        if version != posted or has_owner != owner:
                            self._post_changes(store, version, has_owner)
                            posted, owner = version, has_owner
                        if self._devices_wanted and started >= self._devices_next:
                            self._devices_next = started + DEVICES_EVERY
                            self._post_devices(store)
                except ExptError:
                    self.errors += 1  # e.g. a locked or missing runs.db: try again next tick
                except OSError:
                    self.errors += 1
                self.ticks += 1
                self._wake.wait(max(0.0, self.interval - (time.monotonic() - started)))
                self._wake.clear()
        finally:
            if store is not None:
                store.close()

    def _backlog(self) -> int:
        queue = getattr(self.app, "_message_queue", None)
        return queue.qsize() if queue is not None else 0

    def _post_changes(self, store: Store, version: int, has_owner: bool) -> None:
        since = self.acknowledged
        runs = store.changed_since(since) if version > since else []
        rows = load_rows(store, runs)
        counts = store.status_counts()
        self.app.post_message(RunsChanged(since=since, version=version, rows=rows, counts=counts,
                                          total=sum(counts.values()), scheduler=has_owner))

    def _post_devices(self, store: Store) -> None:
        try:
            if self._sampler is None:
                from expt.core.devices import MachineSampler

                self._sampler = MachineSampler()
            message = sample_devices(store, self.project, self._sampler, self.history)
        except (ExptError, OSError):
            raise  # runs.db locked or gone: the next tick tries again
        except Exception as error:  # noqa: BLE001  psutil or NVML failing in a way of its own: say so, go on
            self.errors += 1
            message = DevicesSampled([], {}, [], 0, None, "", DEVICES_EVERY,
                                     problem=f"sampling the machine failed: {type(error).__name__}: {error}")
        self.app.post_message(message)

    def _watch_config(self) -> None:
        path = self.project.config_path
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (0, -1)
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        self.app.post_message(read_config(self.project))


def sample_devices(store: Store, project: Project, sampler: MachineSampler, history: DeviceHistory,
                   now: float | None = None) -> DevicesSampled:
    """One look at the machine for the Devices screen: every device with the runs on it (their latest ``sys/``
    load), free slots and the queue (``expt.core.devices.overview``), and each device's history."""
    from expt.core.devices import overview

    keeping = _Keeping(sampler)
    rows, queue = overview(store, project, keeping)
    traces = history.add(rows, time.monotonic() if now is None else now)
    return DevicesSampled(rows, traces, queue[:QUEUE_SHOWN], len(queue), keeping.cpu, sampler.nvml.reason,
                          history.every)


class _Keeping:
    """``sampler``, remembering the CPU's numbers of its last sample (``overview`` keeps only the rows)."""

    def __init__(self, sampler: MachineSampler) -> None:
        self.sampler = sampler
        self.cpu: CpuSample | None = None

    def sample(self) -> tuple[CpuSample, list[GpuSample]]:
        cpu, gpus = self.sampler.sample()
        self.cpu = cpu
        return cpu, gpus


def read_config(project: Project) -> ConfigLoaded:
    """experiments.toml as the experiments screen shows it: its experiments, or one line per problem."""
    from expt.config import load_config

    try:
        config = load_config(project.config_path)
    except ExptError as error:
        return ConfigLoaded(str(project.config_path), [], str(error).splitlines() or [repr(error)])
    rows = []
    for name, experiment in config.experiments.items():
        expansion = experiment.expand()
        spec = experiment.search
        search = f"{spec.sampler} sampler over {', '.join(spec.space)}" if spec else ""
        rows.append(ExperimentRow(name, experiment.recipe, experiment.description,
                                  spec.trials if spec else len(expansion.points),
                                  0 if spec else len(expansion.skipped), dict(experiment.sweep), experiment.repeat,
                                  search))
    return ConfigLoaded(str(project.config_path), rows, [])
