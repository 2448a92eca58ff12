"""The GPU box at a glance in the TUI (issue 17): the Devices screen, the runs table's device column and the run
detail's System tab, against a real `command` run whose worker logs sys/ metrics every second.

The script waits for a file that the test creates once it has seen what it came for; this machine has no GPU, so
the Devices screen shows the CPU and says why there are no GPUs.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from conftest import ended, expt, screen_text, until, until_shown, wait_for, write_project
from expt.core.devices import DeviceRow, Nvml
from expt.project import Project
from expt.tui.app import ExptApp, create_app
from expt.tui.devices import DeviceHistory
from expt.tui.format import binned, levels, mean
from expt.tui.rows import RunRow, load_key, short_device

# one CSV row (a chart in the Charts tab), then wait for {run_dir}/go
SCRIPT = r'''
import os, sys, time
out = sys.argv[1]
with open(os.path.join(out, "scores.csv"), "w") as handle:
    handle.write("epoch,eval_top1\n0,40.0\n")
while not os.path.exists(os.path.join(out, "go")):
    time.sleep(0.05)
'''


def project(tmp_path: Path) -> Path:
    folder = write_project(tmp_path / "proj", f'''\
[experiments.s]
recipe = "command"
description = "waits for the test"
command = "{{python}} wait.py {{run_dir}}"
python = "{sys.executable}"
metrics = ["scores.csv"]
sys_interval = 1

[experiments.s.sweep]
lr = [0.1, 0.05]
''')
    (folder / "wait.py").write_text(SCRIPT)
    return folder


def make_app(folder: Path) -> ExptApp:
    return create_app(Project(folder / "experiments.toml"), interval=0.2, image_mode="halfcell")


def load_cells(app: ExptApp) -> dict[str, str]:
    """The runs table's load column as shown: run id -> text ({} while the column is not there)."""
    table = app.runs_screen.table
    shown = {}
    for row in table.ordered_rows:
        cells = dict(zip((str(c.key.value) for c in table.ordered_columns), table.get_row(row.key)))
        if "load" in cells:
            shown[str(cells["id"].plain)] = str(cells["load"].plain)
    return shown


@pytest.mark.slow
def test_devices_screen_device_column_and_system_tab_on_a_run_logging_sys_metrics(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    if Nvml.open().ok:
        pytest.skip("this machine has an NVIDIA driver: its Devices screen shows GPUs, not the CPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the pool: one CPU slot, so s-2 waits in the queue
    folder = project(tmp_path)
    started = expt("run", "s", "--detach", cwd=folder)
    assert started.returncode == 0, started.stdout + started.stderr
    sampled: list[str] = []

    def record(message) -> None:
        if type(message).__name__ == "DevicesSampled":
            sampled.append(type(app.screen).__name__)

    async def scenario():
        async with app.run_test(size=(80, 24), notifications=True, message_hook=record) as pilot:
            # the runs table: the running run with its CPU percent in the load column, the other one queued
            await until(pilot, lambda: re.fullmatch(r"cpu \d+%", load_cells(app).get("s-1", "")), timeout=120,
                        what="s-1's load in the runs table")
            assert app.runs_screen.table.row_for("s-2").run.status == "queued"
            assert not sampled  # nothing samples the machine while the Devices screen is not shown

            # the Devices screen by its key: the CPU, the run on it with its load, no slot free, the queue
            await pilot.press("3")
            await until(pilot, lambda: app.screen is app.devices_screen, what="the devices screen")
            await until_shown(pilot, app, "3 Devices", "CPU, ", "0 of 1 free", "runs s-1 ",
                              "no NVIDIA driver (libnvidia-ml not found)", "1 waiting, in the order they start")
            text = screen_text(app)
            assert re.search(r"^ cpu  CPU, \d+ cores .* 0 of 1 free $", text, re.M), text
            assert re.search(r"^   util [▁▂▃▄▅▆▇█ ]+ +\d+%   mem [▁▂▃▄▅▆▇█ ]+ +[\d.]+/[\d.]+ GiB", text, re.M), text
            assert re.search(r"^   runs s-1 \d+%", text, re.M), text
            assert re.search(r"^ +1  s-2  s  lr=0\.05", text, re.M), text
            card = app.devices_screen.cards["cpu"]
            await until(pilot, lambda: len(card.trace.util) >= 2, what="a second sample on the sparklines")

            # leaving it stops the sampling; the command palette brings it back
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.runs_screen, what="back on the runs")
            seen, ticks = len(sampled), app.feed.ticks
            await until(pilot, lambda: app.feed.ticks >= ticks + 15, what="three seconds of the feed")
            assert len(sampled) <= seen + 1 and set(sampled[seen:]) <= {"RunsScreen"}  # one already on its way
            await pilot.press("ctrl+p")
            await pilot.press(*"Devices")
            await until_shown(pilot, app, "The GPUs (or the CPU)")
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is app.devices_screen and len(sampled) > seen + 1,
                        what="the devices screen sampled again")
            await until_shown(pilot, app, "runs s-1 ", "1 waiting")

            # the run detail: the training metric in Charts, the sys/ series in System only
            await pilot.press("1")
            await until(pilot, lambda: app.screen is app.runs_screen, what="the runs screen")
            app.runs_screen.table.move_to(app.runs_screen.table.row_for("s-1").rid)
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen" and app.screen.charts,
                        what="the run detail with its charts")
            detail = app.screen
            assert set(detail.charts) == {"eval_top1"}
            await pilot.press("tab")
            await until_shown(pilot, app, "eval_top1")
            assert "sys/" not in screen_text(app)
            assert not detail.sys_charts  # made when the System tab is first shown
            await pilot.press("shift+tab", "shift+tab")
            await until(pilot, lambda: detail.query_one("TabbedContent").active == "tab-system" and
                        "sys/cpu_percent" in detail.sys_charts, what="the System tab's charts")
            assert {"sys/cpu_percent", "sys/rss_mb"} <= set(detail.sys_charts)
            assert all(k.startswith("sys/") for k in detail.sys_charts)
            await until_shown(pilot, app, "sys/cpu_percent", "seconds")
            points = len(detail.sys_charts["sys/cpu_percent"].series["s-1"][0])
            await until(pilot, lambda: len(detail.sys_charts["sys/cpu_percent"].series["s-1"][0]) > points,
                        timeout=60, what="a new sample on the live System chart")
            await pilot.press("q")

    app = make_app(folder)
    try:
        asyncio.run(scenario())
    finally:
        for run_id in ("s-1", "s-2"):
            (folder / "runs" / run_id / "go").touch()
    for run_id in ("s-1", "s-2"):
        assert wait_for(lambda: ended(folder, run_id), timeout=120, what=f"{run_id} to end") == "completed"


# -- the pieces, without a TUI -------------------------------------------------------------------------------


def test_device_names_and_load_keys_of_the_runs_table():
    assert short_device("cuda:0#2") == "g0" and short_device("cuda:3") == "g3" and short_device("cpu#1") == "cpu"
    assert short_device(None) == "" and short_device("mycluster") == "mycluster"
    assert load_key("cuda:1#2") == "sys/gpu1/util" and load_key("cpu#2") == "sys/cpu_percent"
    assert load_key("mycluster") is None and load_key(None) is None


def test_a_fixed_scale_sparkline_binned_so_that_bins_stay_put():
    assert levels([0, 12.4, 50, 100, None, 99.9]) == "▁▁▅█ █"
    assert binned([10, 20, 30, 40], 0, 4) == [10, 20, 30, 40]
    assert binned([10, 20, 30, 40, None, None], 0, 3, mean) == [15, 35, None]
    # aligned to the sample number: one more sample does not move what the earlier bins hold
    assert binned([10, 20, 30], 1, 2, max) == [10, 30]
    assert binned([], 0, 4) == [] and binned([1.0], 0, 0) == []


def test_device_history_is_bounded_and_marks_the_time_it_was_not_sampled():
    history = DeviceHistory(size=5, every=2.0)
    row = DeviceRow("cpu", "CPU, 2 cores", 50.0, 1024.0, 4096.0)
    history.add([row], now=0.0)
    trace = history.add([row], now=2.3)  # a little late: no gap
    assert trace["cpu"].util == (50.0, 50.0) and trace["cpu"].mem == (25.0, 25.0) and trace["cpu"].first == 0
    trace = history.add([row], now=10.3)  # three samples missed (the screen was hidden)
    assert trace["cpu"].util == (50.0, None, None, None, 50.0) and trace["cpu"].first == 1
    gpu = DeviceRow("cuda:0", "A100", 10.0, None, None)
    trace = history.add([gpu], now=12.3)  # the CPU missing from a sample: a gap for it too
    assert trace["cuda:0"].util == (10.0,) and trace["cuda:0"].mem == (None,) and trace["cuda:0"].first == 6
    assert history.add([row, gpu], now=14.3)["cpu"].util == (None, None, 50.0, None, 50.0)


def test_run_row_device_text():
    from expt.store import Run

    run = Run(rid=1, id="a-1", experiment="a", seq=1, recipe="command", description="", status="running", params={},
              varying={},
              summary={}, metric=None, goal="max", origin="expt", created_at=0.0, started_at=0.0, ended_at=None,
              run_dir="/x", device="cuda:2#1")
    assert RunRow(run, load=35.4).load_text == "g2 35%" and RunRow(run).load_text == ""


def test_the_system_tab_orders_its_charts_and_draws_a_gpus_total_memory_with_its_used_memory():
    from expt.tui.screens.run_detail import chart_of, chart_order

    keys = ["sys/write_mb_s", "lr", "sys/gpu0/mem_total_mb", "sys/gpu0/util", "top1", "sys/rss_mb", "train_loss",
            "sys/gpu0/mem_mb", "sys/cpu_percent", "sys/read_mb_s"]
    assert chart_order(keys, "top1") == ["top1", "train_loss", "lr", "sys/cpu_percent", "sys/rss_mb", "sys/gpu0/util",
                                         "sys/gpu0/mem_mb", "sys/gpu0/mem_total_mb", "sys/read_mb_s", "sys/write_mb_s"]
    assert chart_of("sys/gpu0/mem_total_mb") == ("sys/gpu0/mem_mb", "total")
    assert chart_of("sys/gpu0/mem_mb") == ("sys/gpu0/mem_mb", "used")
    assert chart_of("sys/cpu_percent") == ("sys/cpu_percent", None) and chart_of("top1") == ("top1", None)
