"""A run's system metrics: its process tree's CPU, memory and I/O (psutil) and its GPUs (NVML), sampled by a
thread of the worker every ``sys_interval`` seconds and logged as ``sys/`` metric lines.

The thread does a few /proc reads and NVML calls per sample (well under a millisecond), holds no lock the
training loop takes, and writes through the Tracker's buffer like any metric, so the training step never waits
for it (bench/bench_sysmon.py measures images/s with and without it). A sample's step is the whole seconds since
the run started. At the end the summary gets ``peak_rss_mb``, ``mean_cpu_percent`` and, on GPUs,
``peak_gpu_mem_mb`` and ``mean_gpu_util``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from expt.core.devices import MIB, Nvml, visible_gpus
from expt.core.runfiles import SYS_PREFIX

if TYPE_CHECKING:
    from expt.core.tracking import Tracker

LOW_UTILISATION = 50.0  # percent: a GPU run that never got above it was waiting for something, usually data


class SystemMonitor:
    def __init__(self, tracker: Tracker, interval: float, nvml: Nvml | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.tracker = tracker
        self.interval = interval
        self.started = time.monotonic()
        self.root = psutil.Process(os.getpid())
        self._processes: dict[int, Any] = {}
        self._io: tuple[float, int, int] | None = None
        self.nvml = nvml or Nvml.open()
        indices = visible_gpus()
        self.gpus: list[int] = (list(range(self.nvml.count())) if indices is None else indices) if self.nvml.ok else []
        self.peak_rss_mb = 0.0
        self.cpu: list[float] = []
        self.gpu_util: list[float] = []
        self.peak_gpu_mem_mb: dict[int, float] = {}
        self.gpu_total_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="expt-sysmon", daemon=True)

    def start(self) -> SystemMonitor:
        self._tree()  # primes cpu_percent: its first call per process has nothing to compare with
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001  a failed sample must never end the run
                pass

    def _tree(self) -> list[Any]:
        psutil = self._psutil
        try:
            current = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            current = [self.root]
        tree = []
        for process in current:
            known = self._processes.get(process.pid)
            if known is None:
                try:
                    process.cpu_percent(None)
                except psutil.Error:
                    continue
                self._processes[process.pid] = known = process
            tree.append(known)
        alive = {p.pid for p in tree}
        for pid in [pid for pid in self._processes if pid not in alive]:
            del self._processes[pid]
        return tree

    def sample(self) -> dict[str, float]:
        """Take one sample, log it and return it."""
        psutil = self._psutil
        cpu = rss = 0.0
        read = written = 0
        tree = self._tree()
        for process in tree:
            try:
                with process.oneshot():
                    cpu += process.cpu_percent(None)
                    rss += process.memory_info().rss / MIB
                    try:
                        counters = process.io_counters()
                        read, written = read + counters.read_bytes, written + counters.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        pass
            except psutil.Error:
                continue
        now = time.monotonic()
        values = {"sys/cpu_percent": cpu, "sys/rss_mb": rss}
        if self._io is not None and now > self._io[0]:
            seconds = now - self._io[0]
            values["sys/read_mb_s"] = max(0, read - self._io[1]) / MIB / seconds
            values["sys/write_mb_s"] = max(0, written - self._io[2]) / MIB / seconds
        self._io = (now, read, written)
        self.cpu.append(cpu)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        pids = {p.pid for p in tree}
        for gpu in self.nvml.sample(self.gpus) if self.gpus else []:
            prefix = f"sys/gpu{gpu.index}/"
            own = sum(mb for pid, mb in gpu.processes.items() if pid in pids)
            for key, value in (("util", gpu.util), ("mem_mb", gpu.mem_used_mb), ("mem_total_mb", gpu.mem_total_mb),
                               ("power_w", gpu.power_w), ("temp_c", gpu.temperature_c)):
                if value is not None:
                    values[prefix + key] = float(value)
            if own:
                values[prefix + "proc_mem_mb"] = own
            if gpu.util is not None:
                self.gpu_util.append(gpu.util)
            used = own or gpu.mem_used_mb
            if used is not None:
                self.peak_gpu_mem_mb[gpu.index] = max(self.peak_gpu_mem_mb.get(gpu.index, 0.0), used)
            if gpu.mem_total_mb is not None:
                self.gpu_total_mb[gpu.index] = gpu.mem_total_mb
        self.tracker.log_metrics(int(now - self.started), **values)
        return values

    def finish(self) -> None:
        """Stop sampling; record the summary and, for a GPU run that never used its GPU well, say why once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if not self.cpu:  # a run shorter than the interval gets one sample
            try:
                self.sample()
            except Exception:  # noqa: BLE001
                pass
        self.tracker.log_summary(**self.summary())
        if note := self.low_utilisation_note():
            self.tracker.log(note)

    def summary(self) -> dict[str, float]:
        summary: dict[str, float] = {}
        if self.cpu:
            summary["peak_rss_mb"] = round(self.peak_rss_mb, 1)
            summary["mean_cpu_percent"] = round(sum(self.cpu) / len(self.cpu), 1)
        if self.peak_gpu_mem_mb:
            summary["peak_gpu_mem_mb"] = round(max(self.peak_gpu_mem_mb.values()), 1)
        if self.gpu_util:
            summary["mean_gpu_util"] = round(sum(self.gpu_util) / len(self.gpu_util), 1)
        return summary

    def low_utilisation_note(self) -> str | None:
        if len(self.gpu_util) < 3 or max(self.gpu_util) >= LOW_UTILISATION:
            return None
        mean = sum(self.gpu_util) / len(self.gpu_util)
        return (f"expt: GPU utilisation stayed under {LOW_UTILISATION:g}% for the whole run (mean {mean:.0f}%): the "
                "GPU was most likely waiting for data. More data-loading workers, images cached decoded, or a "
                "larger batch_size help (README: 'A GPU that waits').")

    def memory_detail(self) -> str | None:
        """For an out-of-memory error: how much each device had and the peak this run reached."""
        if not self.peak_gpu_mem_mb:
            return None
        return "; ".join(f"cuda:{index} has {self.gpu_total_mb.get(index, 0):,.0f} MiB, this run peaked at "
                         f"{peak:,.0f} MiB" for index, peak in sorted(self.peak_gpu_mem_mb.items()))


def start(tracker: Tracker, interval: float) -> SystemMonitor | None:
    """A running monitor, or None when ``interval`` is 0 (off) or psutil cannot see this process."""
    if not interval or interval <= 0:
        return None
    try:
        return SystemMonitor(tracker, interval).start()
    except Exception:  # noqa: BLE001  no system metrics is better than no run
        return None

