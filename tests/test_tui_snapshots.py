"""Snapshots of the TUI's main screens at 80x24 (pytest-textual-snapshot).

A screen must look the same on every machine, so the project here is built from what does not
vary: folders in timm train.py's output format with fixed numbers and file times, imported by
expt's real importer as completed runs (durations come from the file times), a queued run and a
cancelled one from the real launcher, and for the sample browser the images a real finetune run
saved (its few-shot draw is fixed by the seed). Nothing relative to "now" is on these screens.
Update with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the report.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input
from textual.worker import WorkerState

from conftest import CONTROL, MARKUP, toml_string, write_project
from expt.project import Project
from expt.store import Store
from expt.tui.app import ExptApp, create_app

SNAPSHOT_TOML = """\
[experiments.tiny]
recipe = "finetune"
description = "a tiny test experiment"
model = "test_efficientnet"
pretrained = false
shots = 2
img_size = 32
epochs = 2
batch_size = 8
lr = 0.05

[experiments.tiny.sweep]
mode = ["e2e", "fc"]

[experiments.fewshot]
recipe = "finetune"
description = "1/3/10 digits per class: end-to-end vs classifier vs conditional BN"
model = "test_efficientnet"
pretrained = false
repeat = 3

[experiments.fewshot.sweep]
mode = ["e2e", "fc", "cbn"]
shots = [1, 3, 10]
"""

T0 = 1_700_000_000.0  # 2023-11-14, the time every timm folder pretends to start at
SIZE = (80, 24)


def write_timm_folder(folder: Path, model: str, lr: float, top1: list[float], minutes_per_epoch: int,
                      **extra: str) -> None:
    import yaml
    from timm.utils import update_summary

    folder.mkdir(parents=True)
    args = {"model": model, "lr": lr, "epochs": len(top1), "batch_size": 32, "opt": "sgd", **extra}
    (folder / "args.yaml").write_text(yaml.safe_dump(args, default_flow_style=False))
    for epoch, value in enumerate(top1):
        update_summary(epoch, OrderedDict(loss=2.2 - 0.25 * epoch), OrderedDict(loss=1.9 - 0.2 * epoch, top1=value,
                       top5=min(100.0, value + 18)), str(folder / "summary.csv"), lr=lr * (1 - epoch / len(top1)))
    end = T0 + 60 * minutes_per_epoch * len(top1)
    os.utime(folder / "args.yaml", (T0, T0))
    os.utime(folder / "summary.csv", (end, end))


@pytest.fixture(scope="module")
def snapshot_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from expt import timm_import
    from expt.config import load_config
    from expt.core import launcher, scheduler

    root = tmp_path_factory.mktemp("snapshots") / "proj"
    root.mkdir()
    (root / "experiments.toml").write_text(SNAPSHOT_TOML)
    sources = root.parent / "timm-output"
    write_timm_folder(sources / "20231114-resnet18", "resnet18", 0.1, [31.5, 52.0, 61.8, 66.2, 65.9, 68.4], 7)
    write_timm_folder(sources / "20231115-resnet50", "resnet50", 0.1, [35.1, 58.3, 70.2, 74.9], 12)
    write_timm_folder(sources / "20231116-resnet50", "resnet50", 0.05, [33.0, 55.4, 69.5, 75.6], 12)
    project = Project(root / "experiments.toml")
    with Store(project.db_path) as store:
        timm_import.import_folders(store, project, [sources])
        queued = launcher.enqueue(store, project, launcher.plan(load_config(project.config_path), "tiny"))
        scheduler.stop(store, [queued[1]])  # cancelled before it started
    return root


def make_app(folder: Path) -> ExptApp:
    return create_app(Project(folder / "experiments.toml"), interval=0.2, image_mode="halfcell")


async def settle(pilot: Pilot, *keys: str) -> None:
    """Wait for the screen to settle, press ``keys`` one by one (each settled), freeze the cursors."""
    await quiet(pilot)
    for key in keys:
        await pilot.press(key)
        await quiet(pilot)
    for widget in pilot.app.query(Input):
        widget.cursor_blink = False
    await pilot.pause(0.2)


async def quiet(pilot: Pilot) -> None:
    """Until the live feed has looked at runs.db twice more and no worker is busy."""
    app: ExptApp = pilot.app  # type: ignore[assignment]
    ticks = app.feed.ticks
    for _ in range(300):
        await pilot.pause(0.05)
        busy = [w for w in app.workers if w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if app.feed.ticks >= ticks + 2 and not busy:
            break


def test_runs_screen(snap_compare, snapshot_project: Path):
    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE, run_before=lambda pilot: settle(pilot))


def test_runs_screen_filtered_and_selected(snap_compare, snapshot_project: Path):
    async def before(pilot: Pilot) -> None:
        await settle(pilot, "slash", *"model=resnet50", "enter")
        await settle(pilot, "space")

    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE, run_before=before)


def test_experiments_screen(snap_compare, snapshot_project: Path):
    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE,
                        run_before=lambda pilot: settle(pilot, "2", "down"))


def test_launch_confirmation(snap_compare, snapshot_project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the pool this machine would use: its CPU
    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE,
                        run_before=lambda pilot: settle(pilot, "2", "enter"))


def test_run_detail_overview(snap_compare, snapshot_project: Path):
    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE,
                        run_before=lambda pilot: settle(pilot, "G", "enter"))


def test_run_detail_charts(snap_compare, snapshot_project: Path):
    async def before(pilot: Pilot) -> None:
        await settle(pilot, "G", "enter")
        await settle(pilot, "tab")

    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE, run_before=before)


def test_compare_screen(snap_compare, snapshot_project: Path):
    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE,
                        run_before=lambda pilot: settle(pilot, "G", "space", "k", "space", "k", "k", "space", "c"))


def fixed_devices_sample():
    """What the live feed would post on a three-GPU box, with numbers that do not vary: GPU 0 runs two jobs at
    about 35% (data-bound), GPU 1's run is 1 GiB from out-of-memory, GPU 2 idles outside the pool."""
    import math

    from expt.core.devices import CpuSample, DeviceRow
    from expt.store import Run
    from expt.tui.devices import DeviceTrace
    from expt.tui.messages import DevicesSampled

    gib = 1024.0
    devices = [
        DeviceRow("cuda:0", "NVIDIA A100-SXM4-40GB", 35.0, 21.3 * gib, 40 * gib, 182.0, 51.0, ["fewshot-4", "fewshot-5"],
                  {"fewshot-4": 36.0, "fewshot-5": 33.0}, slots=2),
        DeviceRow("cuda:1", "NVIDIA A100-SXM4-40GB", 97.0, 39.0 * gib, 40 * gib, 391.0, 67.0, ["fewshot-6"],
                  {"fewshot-6": 97.0}, slots=2, others=1),
        DeviceRow("cuda:2", "NVIDIA A100-SXM4-40GB", 0.0, 0.4 * gib, 40 * gib, 52.0, 33.0),
    ]
    n = 150
    history = {
        "cuda:0": DeviceTrace(tuple(round(35 + 30 * math.sin(i / 3) ** 9) for i in range(n)),
                              tuple(round(40 + 13 * min(1, i / 40), 1) for i in range(n)), 40),
        "cuda:1": DeviceTrace(tuple(95 + i % 4 for i in range(n)),
                              tuple(round(60 + 37.5 * i / n, 1) for i in range(n)), 40),
        "cuda:2": DeviceTrace((0.0,) * n, (1.0,) * n, 40),
    }
    queue = [Run(rid=10 + i, id=f"fewshot-{7 + i}", experiment="fewshot", seq=7 + i, recipe="finetune",
                 description="", status="queued", params={}, varying={"mode": mode, "shots": shots}, summary={},
                 metric="top1", goal="max", origin="expt", created_at=T0, started_at=None, ended_at=None,
                 run_dir=f"/runs/fewshot-{7 + i}")
             for i, (mode, shots) in enumerate([("fc", 3), ("cbn", 3), ("e2e", 10), ("fc", 10)])]
    cpu = CpuSample(41.0, 32, 61.5 * gib, 251.6 * gib, (9.5, 9.1, 8.7))
    return DevicesSampled(devices, history, queue, len(queue), cpu, "", 2.0)


def test_devices_screen(snap_compare, snapshot_project: Path, monkeypatch: pytest.MonkeyPatch):
    """Built from a fixed sample (what this machine's CPU does would change the picture on every run)."""
    from expt.tui.feed import LiveFeed

    monkeypatch.setattr(LiveFeed, "want_devices", lambda self, wanted: None)

    async def before(pilot: Pilot) -> None:
        await settle(pilot, "3")
        pilot.app.post_message(fixed_devices_sample())
        await settle(pilot)

    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE, run_before=before)


def test_help_screen(snap_compare, snapshot_project: Path):
    assert snap_compare(make_app(snapshot_project), terminal_size=SIZE,
                        run_before=lambda pilot: settle(pilot, "question_mark"))


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A description and imported args.yaml values that hold markup and control codes."""
    from expt import timm_import

    root = tmp_path_factory.mktemp("hostile") / "proj"
    write_project(root, SNAPSHOT_TOML.replace('"a tiny test experiment"', toml_string(f"{MARKUP} {CONTROL}")))
    sources = root.parent / "timm-output"
    write_timm_folder(sources / "20231114-resnet18", "resnet18", 0.1, [31.5, 52.0, 61.8], 7,
                      data_dir=f"/data/{MARKUP}", experiment=CONTROL)
    with Store(Project(root / "experiments.toml").db_path) as store:
        timm_import.import_folders(store, Project(root / "experiments.toml"), [sources])
    return root


def test_hostile_text_on_the_experiments_screen(snap_compare, hostile_project: Path):
    """The description as written: its markup as text, its control codes escaped."""
    assert snap_compare(make_app(hostile_project), terminal_size=SIZE, run_before=lambda pilot: settle(pilot, "2"))


def test_hostile_text_in_a_run_detail(snap_compare, hostile_project: Path):
    assert snap_compare(make_app(hostile_project), terminal_size=SIZE,
                        run_before=lambda pilot: settle(pilot, "enter"))


@pytest.fixture
def samples_project(finished_project: Path, tmp_path: Path) -> Path:
    target = tmp_path / "proj"
    shutil.copytree(finished_project, target, ignore=shutil.ignore_patterns("runs.db*"))
    with Store(target / "runs.db") as store:
        store.reindex(target / "runs")
    return target


def test_samples_screen(snap_compare, samples_project: Path):
    assert snap_compare(make_app(samples_project), terminal_size=SIZE, run_before=lambda pilot: settle(pilot, "i"))
