"""The Devices screen's history of each device: plain data, kept in the live feed's thread.

The feed samples the machine (``feed.sample_devices``: ``expt.core.devices.overview``) every ``DEVICES_EVERY``
seconds while the screen is shown; ``DeviceHistory`` keeps each device's last few minutes of utilisation and
memory, a bounded deque per device, with a gap (None) for the time no sample was taken (the screen was hidden).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from expt.core.devices import DeviceRow

DEVICES_EVERY = 2.0  # seconds between samples while the Devices screen is shown
HISTORY = 150  # samples kept per device: five minutes at one every 2 s
QUEUE_SHOWN = 50  # queued runs the message carries (the count says how many wait in all)


@dataclass(frozen=True)
class DeviceTrace:
    """A device's recent samples, oldest first (None: not sampled then); ``first`` counts the samples that came
    before them, so that the screen's bins stay put as new samples arrive."""

    util: tuple[float | None, ...] = ()
    mem: tuple[float | None, ...] = ()  # percent of the device's memory in use
    first: int = 0


class DeviceHistory:
    """The last ``size`` samples of each device's utilisation and memory (percent), one every ``every`` seconds."""

    def __init__(self, size: int = HISTORY, every: float = DEVICES_EVERY) -> None:
        self.size = size
        self.every = every
        self.count = 0  # samples taken (gaps included)
        self.last: float | None = None
        self._util: dict[str, collections.deque[float | None]] = {}
        self._mem: dict[str, collections.deque[float | None]] = {}

    def add(self, rows: list[DeviceRow], now: float) -> dict[str, DeviceTrace]:
        """Record one sample of ``rows`` taken at ``now`` (monotonic seconds); the traces of every device in it."""
        periods = 1.0 if self.last is None else (now - self.last) / self.every
        missed = min(self.size, round(periods) - 1) if periods >= 2.5 else 0  # a late sample is no gap
        self.last = now
        shown = {row.name for row in rows}
        for name in self._util:
            self._util[name].extend([None] * (missed + (name not in shown)))
            self._mem[name].extend([None] * (missed + (name not in shown)))
        self.count += missed + 1
        traces = {}
        for row in rows:
            if row.name not in self._util:
                self._util[row.name] = collections.deque(maxlen=self.size)
                self._mem[row.name] = collections.deque(maxlen=self.size)
            util, mem = self._util[row.name], self._mem[row.name]
            util.append(row.util)
            mem.append(row.mem_used_mb / row.mem_total_mb * 100 if row.mem_used_mb is not None and row.mem_total_mb
                       else None)
            traces[row.name] = DeviceTrace(tuple(util), tuple(mem), self.count - len(util))
        return traces
