"""Issue 17: what the system monitor costs training. The finetune recipe's training step (efficientnet_lite0,
64 px, batch 16, channels-last, one thread as in bench_throughput) in blocks of steps, with the worker's
`SystemMonitor` sampling every second (`sys_interval = 1`, ten times the default rate) against no monitor
(`sys_interval = 0`), the blocks in turn, the same model and batch.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import Bench, interleaved, rate, ratio_at_least, value


def main() -> None:
    import torch

    from expt.core import data, models, runfiles
    from expt.core.sysmon import SystemMonitor
    from expt.core.tracking import Tracker

    bench = Bench("sysmon", "System metrics",
                  "Images per second of the finetune recipe's training step with the system monitor sampling "
                  "every second (`sys_interval = 1`) against no monitor (`sys_interval = 0`), and one sample's "
                  "cost.")
    name, size, batch = ("test_efficientnet", 32, 4) if bench.quick else ("efficientnet_lite0", 64, 16)
    steps, blocks = bench.size(25, 3), bench.repeats(12, 2)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = models.create_model(name, num_classes=10, pretrained=False).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    normalizer = data.Normalizer(device, channels_last=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    criterion = torch.nn.CrossEntropyLoss()
    work = Path(tempfile.mkdtemp(prefix="expt-bench-sysmon-"))
    (work / runfiles.METRICS).touch()
    samples = []

    def train(monitored: bool) -> float:
        tracker = Tracker(work)
        monitor = SystemMonitor(tracker, 1.0).start() if monitored else None
        start = time.perf_counter()
        for _ in range(steps):
            loss = criterion(model(normalizer(images)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
        seconds = time.perf_counter() - start
        if monitor is not None:
            monitor._stop.set()
            monitor._thread.join()
            samples.append(len(monitor.cpu))
        tracker.close()
        return seconds

    try:
        train(False)  # warm-up: allocator, first-call set-up
        bench.progress(f"{blocks} blocks of {steps} steps each way")
        times = interleaved({"on": lambda: train(True), "off": lambda: train(False)}, blocks)
        tracker = Tracker(work)
        monitor = SystemMonitor(tracker, 3600.0).start()
        sample_times = []
        for _ in range(bench.repeats(200, 5)):
            begin = time.perf_counter()
            monitor.sample()
            sample_times.append(time.perf_counter() - begin)
        monitor._stop.set()
        tracker.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    on, off = rate(steps * batch, times["on"], "images/s"), rate(steps * batch, times["off"], "images/s")
    bench.row(f"{name} {size} px train step, sys_interval = 1", on, off, "sys_interval = 0 (no monitor)",
              ratio_at_least(0.99))
    sample_ms = sorted(sample_times)[len(sample_times) // 2] * 1000
    bench.row("one sample (process tree, CPU, memory, I/O; NVML when present)", value(sample_ms, "ms"),
              value(1000.0, "ms"), "the interval, sys_interval = 1")
    bench.note(f"{blocks} blocks of {steps} training steps (batch {batch}) each way, in turn; "
               f"{sum(samples) / max(1, len(samples)):.1f} samples per monitored block on average. The monitor is a "
               "thread of the worker: each sample reads /proc for the run's process tree (psutil) and asks NVML "
               "for its GPUs, then appends one metric line to the tracker's buffer; nothing the training step "
               "waits for. No GPU on this machine: the NVML calls are not in these figures.")
    bench.write()


if __name__ == "__main__":
    main()
