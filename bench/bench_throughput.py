"""Item 6: training and evaluation throughput, the reference a user compares their runs with.

The finetune recipe's step (uint8 batch normalised on the device, timm model, cross-entropy, SGD with
momentum) and its evaluation forward pass, with expt's defaults: channels-last memory on CPU, and on a
GPU channels-last with AMP (bfloat16 where supported). The baseline is the same step on the same batch
in the plain layout (contiguous, float32), the two models stepped in turn.
"""

from __future__ import annotations

import os
import time

from common import Bench, rate

MODELS = ("efficientnet_lite0", "resnet18")
SIZES = (64, 128)


def main() -> None:
    import torch

    bench = Bench("throughput", "Training throughput",
                  "Images per second of the finetune recipe's training step and of its evaluation forward pass, "
                  "for efficientnet_lite0 and resnet18 at 64 and 128 px, with expt's defaults against the plain "
                  "layout.")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    models = ("test_efficientnet",) if bench.quick else MODELS
    sizes = (32,) if bench.quick else SIZES
    steps = bench.repeats(3, 1)
    cores = os.cpu_count() or 1
    torch.set_num_threads(1)  # per core: on a shared machine more threads measured the load, not the model
    one_thread = {}
    for device_name in devices:
        device = torch.device(device_name)
        gpu = device.type == "cuda"
        train_batch, eval_batch = (128, 256) if gpu else (16, 64)  # 16: the finetune recipe's batch_size
        if bench.quick:
            train_batch, eval_batch = 4, 8
        default = "channels-last + AMP" if gpu else "channels-last"
        for name in models:
            for size in sizes:
                bench.progress(f"{name} at {size} px on {device_name}")
                figures = measure(name, size, device, train_batch, eval_batch, steps, amp=gpu)
                one_thread.setdefault((device_name, name), (size, figures))
                label = f"{name} {size} px, {device_name}"
                bench.row(f"{label}: train step ({default}, batch {train_batch})", figures["train"],
                          figures["train_plain"], "contiguous float32")
                bench.row(f"{label}: evaluation ({default}, batch {eval_batch})", figures["eval"],
                          figures["eval_plain"], "contiguous float32")
    if cores > 1:
        name = models[0]
        size, single = one_thread[("cpu", name)]
        bench.progress(f"{name} at {size} px on cpu with {cores} threads")
        torch.set_num_threads(cores)
        threaded = measure(name, size, torch.device("cpu"), 4 if bench.quick else 16, 8 if bench.quick else 64,
                           steps, amp=False, plain=False)
        bench.row(f"{name} {size} px, cpu: train step with {cores} threads (channels-last)", threaded["train"],
                  single["train"], "1 thread")
        bench.row(f"{name} {size} px, cpu: evaluation with {cores} threads (channels-last)", threaded["eval"],
                  single["eval"], "1 thread")
    where = "CPU: 1 thread (torch.set_num_threads), the last rows all cores" + (
        f"; GPU: {torch.cuda.get_device_name()}" if "cuda" in devices else "; no GPU on this machine")
    bench.note(f"{where}. Random init, 10 classes, random uint8 images; after one untimed step of each, "
               f"{steps} timed training steps and {steps} evaluation batches per layout, the layouts in turn. "
               "A reference for a user's own runs: no target. `expt run` gives a run cores / jobs threads "
               "(OMP_NUM_THREADS); when the cores are shared with other work, the last rows show what the extra "
               "threads buy, or cost.")
    bench.write()


def measure(name: str, size: int, device, train_batch: int, eval_batch: int, steps: int,
            amp: bool, plain: bool = True) -> dict:
    """Images/s of the train step and the evaluation with expt's layout (keys ``train``, ``eval``) and, with
    ``plain``, the contiguous float32 layout (``train_plain``, ``eval_plain``), the layouts in turn."""
    import torch

    from expt.core import data, models, training

    layouts = {"": (torch.channels_last, amp), "_plain": (torch.contiguous_format, False)}
    if not plain:
        del layouts["_plain"]
    state = None
    setups = {}
    for suffix, (memory_format, use_amp) in layouts.items():
        torch.manual_seed(0)
        model = models.create_model(name, num_classes=10, pretrained=False)
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        model.to(device, memory_format=memory_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        normalizer = data.Normalizer(device, channels_last=memory_format is torch.channels_last)
        scaler = training.grad_scaler(device, use_amp)
        setups[suffix] = (model, optimizer, normalizer, scaler, use_amp)
    generator = torch.Generator().manual_seed(0)
    x_train = torch.randint(0, 256, (train_batch, 3, size, size), dtype=torch.uint8, generator=generator)
    y_train = torch.randint(0, 10, (train_batch,), generator=generator)
    x_eval = torch.randint(0, 256, (eval_batch, 3, size, size), dtype=torch.uint8, generator=generator)
    criterion = torch.nn.CrossEntropyLoss()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(suffix: str) -> float:
        model, optimizer, normalizer, scaler, use_amp = setups[suffix]
        model.train()
        sync()
        start = time.perf_counter()
        x, y = normalizer(x_train), y_train.to(device)
        with training.autocast(device, use_amp):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss.item()
        sync()
        return time.perf_counter() - start

    def eval_batch_time(suffix: str) -> float:
        model, _, normalizer, _, use_amp = setups[suffix]
        model.eval()
        sync()
        start = time.perf_counter()
        with torch.no_grad(), training.autocast(device, use_amp):
            model(normalizer(x_eval)).float().cpu()
        sync()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {f"{kind}{suffix}": [] for kind in ("train", "eval") for suffix in layouts}
    for suffix in layouts:
        train_step(suffix)
        eval_batch_time(suffix)
    for i in range(steps):
        for suffix in (layouts if i % 2 == 0 else reversed(list(layouts))):
            times[f"train{suffix}"].append(train_step(suffix))
    for i in range(steps):
        for suffix in (layouts if i % 2 == 0 else reversed(list(layouts))):
            times[f"eval{suffix}"].append(eval_batch_time(suffix))
    return {key: rate(train_batch if key.startswith("train") else eval_batch, values, "images/s")
            for key, values in times.items()}


if __name__ == "__main__":
    main()
