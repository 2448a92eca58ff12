"""What the machine's devices are doing: NVIDIA GPUs through NVML (nvidia-ml-py), CPU and memory through psutil.

Never by parsing `nvidia-smi` text. NVML is behind :class:`Nvml`, which is either open or says why not ("no
NVIDIA driver ..."); everything else works the same without it. Neither library imports torch, so the TUI's feed
thread and `expt ps` can use this module.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1 << 20


@dataclass
class GpuSample:
    index: int
    name: str
    util: float | None          # percent of the last sample period a kernel ran
    mem_used_mb: float | None
    mem_total_mb: float | None
    power_w: float | None
    temperature_c: float | None
    processes: dict[int, float] = field(default_factory=dict)  # pid -> MiB of this GPU's memory, where NVML says

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["processes"] = {str(pid): mb for pid, mb in self.processes.items()}
        return data


class Nvml:
    """NVML, opened once per process. ``Nvml.open()`` never raises: without a driver ``ok`` is False and
    ``reason`` says why."""

    _shared: Nvml | None = None

    def __init__(self) -> None:
        self.ok = False
        self.reason = ""
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}
        try:
            import pynvml
        except ImportError:
            self.reason = "no NVIDIA driver: nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            self.reason = f"no NVIDIA driver ({_nvml_text(error)})"
            return
        self._nvml = pynvml
        self.ok = True

    @classmethod
    def open(cls) -> Nvml:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def count(self) -> int:
        if not self.ok:
            return 0
        try:
            return int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError:
            return 0

    def sample(self, indices: list[int] | None = None) -> list[GpuSample]:
        """One sample of each GPU in ``indices`` (NVML's numbering; all when None)."""
        if not self.ok:
            return []
        chosen = range(self.count()) if indices is None else indices
        return [s for s in (self._sample(i) for i in chosen) if s is not None]

    def _sample(self, index: int) -> GpuSample | None:
        nvml = self._nvml
        try:
            handle = self._handles.get(index) or nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError:
            return None
        self._handles[index] = handle
        util = _try(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu), nvml)
        memory = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(handle), nvml)
        power = _try(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, nvml)
        temperature = _try(lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)), nvml)
        name = _try(lambda: nvml.nvmlDeviceGetName(handle), nvml) or f"GPU {index}"
        processes: dict[int, float] = {}
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for process in _try(lambda: getattr(nvml, getter)(handle), nvml) or []:
                used = getattr(process, "usedGpuMemory", None)
                if isinstance(used, int) and 0 <= used < 1 << 50:  # NVML's "not available" is a huge sentinel
                    processes[int(process.pid)] = processes.get(int(process.pid), 0.0) + used / MIB
                else:
                    processes.setdefault(int(process.pid), 0.0)
        return GpuSample(index, name.decode() if isinstance(name, bytes) else str(name), util,
                         memory.used / MIB if memory else None, memory.total / MIB if memory else None, power,
                         temperature, processes)


def _try(fn: Any, nvml: Any) -> Any:
    try:
        return fn()
    except nvml.NVMLError:
        return None


def _nvml_text(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return "libnvidia-ml not found" if "NVML Shared Library Not Found" in text else text


def visible_gpus(env: dict[str, str] | None = None) -> list[int] | None:
    """The NVML indices a process with ``env`` may use: CUDA_VISIBLE_DEVICES as numbers, [] when it hides every
    GPU, None when it is not set (all of them). UUIDs and MIG names are not mapped (None: not known)."""
    value = (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or parts[0] == "-1":
        return []
    try:
        return [int(p) for p in parts]
    except ValueError:
        return None


@dataclass
class CpuSample:
    percent: float          # of the whole machine (every core counted: 0..100)
    cores: int
    mem_used_mb: float
    mem_total_mb: float
    load: tuple[float, float, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class MachineSampler:
    """The machine as a whole, for the TUI's Devices screen and `expt ps`: every GPU NVML sees (also those no expt
    run uses) and the CPU. ``cpu_percent`` needs two calls to mean something: the first primes it."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.nvml = Nvml.open()
        psutil.cpu_percent(interval=None)
        self._primed = time.monotonic()

    def sample(self) -> tuple[CpuSample, list[GpuSample]]:
        """The CPU since the last call (a first call right after priming waits 0.2 s to have something to
        measure) and each GPU now."""
        psutil = self._psutil
        memory = psutil.virtual_memory()
        waited = 0.2 if time.monotonic() - self._primed < 0.1 else None
        cpu = CpuSample(psutil.cpu_percent(interval=waited), psutil.cpu_count() or 1,
                        (memory.total - memory.available) / MIB, memory.total / MIB, os.getloadavg())
        return cpu, self.nvml.sample()


@dataclass
class DeviceRow:
    """One device of the machine as `expt ps` and the TUI's Devices screen show it."""

    name: str                    # cuda:0 or cpu, as the runs' device column names it
    label: str                   # NVIDIA A100-SXM4-40GB, or "CPU, 16 cores"
    util: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    power_w: float | None = None
    temperature_c: float | None = None
    runs: list[str] = field(default_factory=list)          # expt runs on it now
    run_load: dict[str, float] = field(default_factory=dict)  # their latest GPU utilisation or CPU percent
    slots: int = 0               # of the pool, on this device
    others: int = 0              # processes on it that are not expt runs (NVML), e.g. someone else's job

    @property
    def free(self) -> int:
        return max(0, self.slots - len(self.runs))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "free": self.free}


def overview(store: Any, project: Any, sampler: MachineSampler) -> tuple[list[DeviceRow], list[Any]]:
    """The machine's devices with the runs on them and the pool's free slots, and the queue in order (runs)."""
    from expt.core.backends import PoolSettings

    cpu, gpus = sampler.sample()
    active = store.runs("status IN ('starting', 'running')")
    queue = sorted(store.runs("status = 'queued'"), key=lambda r: r.rid)
    settings = PoolSettings.load(project)
    slots = settings.slots() if settings.backend == "local" else []
    on: dict[str, list[Any]] = {}
    for run in active:
        on.setdefault((run.device or "").split("#")[0], []).append(run)
    rows = []
    for gpu in gpus:
        name = f"cuda:{gpu.index}"
        runs = on.get(name, [])
        load = store.last_values(runs, f"sys/gpu{gpu.index}/util")
        pids = {r.pid for r in runs}
        rows.append(DeviceRow(name, gpu.name, gpu.util, gpu.mem_used_mb, gpu.mem_total_mb, gpu.power_w,
                              gpu.temperature_c, [r.id for r in runs],
                              {r.id: load[r.rid] for r in runs if load.get(r.rid) is not None},
                              sum(1 for s in slots if s.name.split("#")[0] == name),
                              sum(1 for pid in gpu.processes if not _under(pid, pids))))
    if not gpus:
        runs = on.get("cpu", [])
        load = store.last_values(runs, "sys/cpu_percent")
        rows.append(DeviceRow("cpu", f"CPU, {cpu.cores} cores", cpu.percent, cpu.mem_used_mb, cpu.mem_total_mb,
                              runs=[r.id for r in runs],
                              run_load={r.id: load[r.rid] for r in runs if load.get(r.rid) is not None},
                              slots=sum(1 for s in slots if s.name.split("#")[0] == "cpu")))
    return rows, queue


def _under(pid: int, roots: set[Any]) -> bool:
    """Is ``pid`` one of ``roots`` or a descendant of one (a worker's training process, a command's child)?"""
    try:
        import psutil

        process = psutil.Process(pid)
        return pid in roots or any(parent.pid in roots for parent in process.parents())
    except Exception:  # noqa: BLE001  gone, or not ours to see
        return False
