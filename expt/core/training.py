"""The training loop the recipes share: epochs, stop and resume, checkpoints, logging.

A recipe supplies the model, optimizer, batches, a ``train_step`` and an
``evaluate``; ``fit`` runs the epochs and owns everything a run manager must get
right: the per-batch seeds, the SIGTERM check after every step, the atomic
checkpoint after every epoch and at a stop, the exact resume at a batch, the
per-epoch metric lines, the best value and its epoch.
"""

from __future__ import annotations

import io
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch

from expt.core import runfiles
from expt.core.data import batch_seed
from expt.core.tracking import StopRequested, Tracker


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from expt.errors import UsageError

        raise UsageError("device = 'cuda' but CUDA is not available on this machine")
    return torch.device("cuda")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return f"cuda:{visible or torch.cuda.current_device()} {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def autocast(device: torch.device, enabled: bool) -> ContextManager:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing on CPU."""
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A loss scaler that is active only for float16 autocast."""
    enabled = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=enabled)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and one optimizer step, through the grad scaler (a no-op unless float16 autocast)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def create_optimizer(params: Iterable[Any], p: dict[str, Any]) -> torch.optim.Optimizer:
    """timm's optimizer factory from a run's params (opt, lr, weight_decay, momentum)."""
    from timm.optim import create_optimizer_v2

    kwargs = {"momentum": p["momentum"]} if p["opt"] in ("sgd", "momentum", "nesterov", "rmsprop") else {}
    return create_optimizer_v2(params, opt=p["opt"], lr=p["lr"], weight_decay=p["weight_decay"], **kwargs)


def create_scheduler(optimizer: torch.optim.Optimizer, p: dict[str, Any], updates_per_epoch: int,
                     epochs: int | None = None):
    """timm's scheduler factory stepping per update; None for sched = 'none'."""
    if p["sched"] == "none":
        return None
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer, sched=p["sched"], num_epochs=epochs if epochs is not None else p["epochs"],
        decay_epochs=p.get("decay_epochs", 30), warmup_epochs=p["warmup_epochs"],
        warmup_lr=p["lr"] * 0.01, min_lr=p["lr"] * 0.001,
        step_on_epochs=False, updates_per_epoch=max(1, updates_per_epoch))
    return scheduler


@dataclass
class FitResult:
    best: float | None
    best_epoch: int | None
    last: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: tuple[int, int] | None = None
    seconds: float = 0.0


@dataclass
class _Position:
    epoch: int = 0          # the epoch in progress (0-based)
    batch: int = 0          # batches of it already trained
    global_step: int = 0
    loss_sum: float = 0.0   # running sums of the epoch in progress
    samples: int = 0
    best: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    done: bool = False
    seconds: float = 0.0


class Checkpoint:
    """``checkpoint[-phase].pt`` in the run folder, written to a temporary file then renamed."""

    def __init__(self, run_dir: Path, phase: str | None):
        name = runfiles.CHECKPOINT if phase is None else f"checkpoint-{phase}.pt"
        self.path = run_dir / name

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def save(self, data: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(data, buffer)  # serialised first, so a full disk is a plain OSError below
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(buffer.getbuffer())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk gets its space back for the run's final status
            raise


def fit(tracker: Tracker, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epochs: int,
        batches: Callable[[int, int], Iterable[Any]], n_batches: int,
        train_step: Callable[[Any], tuple[float, int]], evaluate: Callable[[int], dict[str, float]],
        metric: str, goal: str = "max", seed: int = 0, scheduler: Any = None,
        train_mode: Callable[[], None] | None = None, phase: str | None = None, suffix: str = "",
        state: dict[str, Any] | None = None, announce_best: bool = True) -> FitResult:
    """Train for ``epochs``, evaluating after each; resumes from this phase's checkpoint if one exists.

    ``train_step(batch) -> (mean loss, batch size)`` does the forward, backward and
    optimizer step; ``evaluate(epoch) -> metrics`` must include ``metric``. Per-epoch
    metrics are logged at step = epoch (1-based) with ``suffix`` appended to each name.
    ``state`` holds further objects with state_dict/load_state_dict to checkpoint.
    """
    checkpoint = Checkpoint(tracker.run_dir, phase)
    stateful = {"model": model, "optimizer": optimizer, **(state or {})}
    pos = _Position()
    saved = checkpoint.load()
    resumed_from = None
    if saved is not None:
        for name, obj in stateful.items():
            if name in saved["state"]:
                obj.load_state_dict(saved["state"][name])
        pos = _Position(**saved["position"])
        resumed_from = (pos.epoch, pos.batch)
        if not pos.done:
            tracker.log(f"resuming{f' {phase}' if phase else ''} at epoch {pos.epoch + 1}, batch {pos.batch}")
    better = (lambda a, b: a > b) if goal == "max" else (lambda a, b: a < b)

    def save(done: bool = False) -> None:
        pos.done = done
        objects = {"model": model} if done else stateful
        checkpoint.save({"position": pos.__dict__, "state": {k: v.state_dict() for k, v in objects.items()}})

    def name(key: str) -> str:
        return f"{key}{suffix}"

    started = time.monotonic() - pos.seconds
    while pos.epoch < epochs and not pos.done:
        tracker.log_progress(pos.epoch, epochs, phase)
        model.train()
        if train_mode is not None:
            train_mode()
        for index, batch in enumerate(batches(pos.epoch, pos.batch), start=pos.batch):
            torch.manual_seed(batch_seed(seed, pos.epoch, index, 7))
            loss, count = train_step(batch)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at epoch {pos.epoch + 1}, batch {index} "
                                         f"(lower lr, or check the data)")
            pos.loss_sum += loss * count
            pos.samples += count
            pos.batch = index + 1
            pos.global_step += 1
            if scheduler is not None:
                scheduler.step_update(pos.global_step)
            if tracker.stop_requested:
                pos.seconds = time.monotonic() - started
                save()
                raise StopRequested()
        model.eval()
        with torch.no_grad():
            scores = evaluate(pos.epoch)
        epoch = pos.epoch + 1
        values = {"train_loss": pos.loss_sum / max(1, pos.samples),
                  "lr": optimizer.param_groups[0]["lr"], **scores}
        tracker.log_metrics(epoch, **{name(k): v for k, v in values.items()})
        value = scores[metric]
        if pos.best is None or better(value, pos.best):
            pos.best, pos.best_epoch = value, epoch
        pos.history.append(values)
        pos.epoch, pos.batch, pos.loss_sum, pos.samples = epoch, 0, 0.0, 0
        pos.seconds = time.monotonic() - started
        tracker.log(f"epoch {epoch}/{epochs}{f' [{phase}]' if phase else ''}: " +
                    "  ".join(f"{k} {v:.4g}" for k, v in values.items()) + f"  ({pos.seconds:.1f} s)")
        tracker.log_summary(**{name(f"best_{metric}"): pos.best, name("best_epoch"): pos.best_epoch})
        save()
        if tracker.stop_requested and pos.epoch < epochs:
            raise StopRequested()
    tracker.log_progress(epochs, epochs, phase)
    if not pos.done:
        save(done=True)
    last = pos.history[-1] if pos.history else {}
    if announce_best and pos.best is not None:
        tracker.log(f"Best metric: {pos.best} (epoch {pos.best_epoch})")
    return FitResult(pos.best, pos.best_epoch, last, pos.history, resumed_from, pos.seconds)
