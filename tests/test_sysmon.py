"""System metrics (issue 17): a run's process tree sampled by psutil into sys/ metric lines, NVML's absence, and
how `show`, `compare`, `export` and `ps` treat them. Real processes through the real CLI; no GPU here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import expt, wait_for, write_project

# allocates 40 MiB, then waits until the worker's monitor has logged a sample taken after it, four times over:
# the memory seen grows from sample to sample however slow the machine is
GROWING = r'''
import os, time
path = os.path.join(os.environ["EXPT_RUN_DIR"], "metrics.jsonl")
def samples():
    with open(path, "rb") as handle:
        return handle.read().count(b'"sys/rss_mb"')
blocks = []
for i in range(4):
    blocks.append(bytearray(40 * 2**20))
    seen = samples()
    while samples() < seen + 2:
        time.sleep(0.05)
    print(f"{len(blocks) * 40} MiB held", flush=True)
'''

WAITING = r'''
import os, time
while not os.path.exists(os.path.join(os.environ["EXPT_RUN_DIR"], "go")):
    sum(range(10000))
'''


def project(tmp_path: Path, script: str, extra: str = "") -> Path:
    folder = write_project(tmp_path / "proj", f'''\
[experiments.grow]
recipe = "command"
command = ["{{python}}", "script.py"]
sys_interval = 1
{extra}
[experiments.quiet]
recipe = "command"
command = ["{{python}}", "-c", "pass"]
sys_interval = 0
''')
    (folder / "script.py").write_text(script)
    return folder


def show(folder: Path, run_id: str, *args: str) -> dict:
    result = expt("show", run_id, "--json", *args, cwd=folder)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = project(tmp_path_factory.mktemp("sysmon"), GROWING, extra="[experiments.grow.sweep]\nseed = [1, 2]")
    result = expt("run", "grow", cwd=folder, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_a_run_whose_memory_grows_is_seen_growing(grown: Path):
    run = show(grown, "grow-1")
    rss = [value for _, value in run["metrics"]["sys/rss_mb"]]
    after_each = rss[1:]  # each sample after the first follows one more 40 MiB block
    assert len(rss) >= 5 and max(rss) - rss[0] > 100, rss  # three more 40 MiB blocks after the first sample
    assert all(b >= a - 5 for a, b in zip(after_each, after_each[1:])), rss
    assert run["summary"]["peak_rss_mb"] >= max(rss) - 0.1 and run["summary"]["mean_cpu_percent"] >= 0
    assert {"sys/cpu_percent", "sys/read_mb_s", "sys/write_mb_s"} <= set(run["metrics"])
    assert all(type(step) is int for step, _ in run["metrics"]["sys/rss_mb"])  # seconds since the start
    assert not any(key.startswith("sys/gpu") for key in run["metrics"])  # no GPU here, and no crash for it


def test_show_keeps_sys_series_out_of_the_metrics_table_and_says_them_in_a_line(grown: Path):
    shown = expt("show", "grow-1", cwd=grown, columns=200).stdout
    assert "system: peak memory" in shown and "mean CPU" in shown
    assert "sys/rss_mb" not in shown and "peak_rss_mb" not in shown
    full = expt("show", "grow-1", "--sys", cwd=grown, columns=200).stdout
    assert "sys/rss_mb" in full and "peak_rss_mb" in full


def test_compare_and_export_show_peak_memory_only_with_sys(grown: Path):
    plain = expt("compare", "grow-1", "grow-2", cwd=grown, columns=200).stdout
    assert "peak_rss_mb" not in plain
    with_sys = expt("compare", "grow-1", "grow-2", "--sys", cwd=grown, columns=200).stdout
    assert "peak_rss_mb" in with_sys
    data = json.loads(expt("compare", "grow-1", "grow-2", "--json", "--sys", cwd=grown).stdout)
    assert len(data["summary"]["peak_rss_mb"]) == 2
    assert "summary.peak_rss_mb" not in expt("export", cwd=grown).stdout.splitlines()[0]
    assert "summary.peak_rss_mb" in expt("export", "--sys", cwd=grown).stdout.splitlines()[0]


def test_sys_interval_0_turns_sampling_off(tmp_path: Path):
    folder = project(tmp_path, GROWING)
    assert expt("run", "quiet", cwd=folder, timeout=300).returncode == 0
    run = show(folder, "quiet-1")
    assert not any(key.startswith("sys/") for key in run["metrics"]) and "peak_rss_mb" not in run["summary"]


def test_sys_interval_is_a_parameter_of_every_recipe_and_checked(tmp_path: Path):
    listed = expt("recipes", "finetune", cwd=tmp_path, columns=200).stdout
    assert "sys_interval" in listed
    folder = write_project(tmp_path / "proj", "[defaults]\nsys_interval = -1\n[experiments.e]\nrecipe = 'scaling'\n")
    result = expt("run", "e", cwd=folder)
    assert result.returncode == 2 and "sys_interval: -1 is below the minimum 0" in result.stderr


def test_ps_shows_the_cpu_row_its_runs_their_load_and_the_queue(tmp_path: Path):
    folder = project(tmp_path, WAITING, extra="[experiments.grow.sweep]\nseed = [1, 2]")
    assert expt("run", "grow", "--detach", cwd=folder).returncode == 0
    try:
        _watch_ps(folder)
    finally:
        expt("stop", "grow", cwd=folder, timeout=120)  # passed or not, no spinning script is left behind


def _watch_ps(folder: Path) -> None:
    def loaded() -> dict | None:
        data = json.loads(expt("ps", "--json", cwd=folder).stdout)
        row = data["devices"][0]
        busy = row["run_load"].get("grow-1", 0) > 20  # the script spins: once sampled, it shows
        return data if row["runs"] == ["grow-1"] and busy and data["queue"] else None

    data = wait_for(loaded, timeout=120, what="grow-1 on the cpu row with its load, grow-2 queued")
    cpu = data["devices"][0]
    assert cpu["name"] == "cpu" and cpu["slots"] == 1 and cpu["free"] == 0 and data["queue"] == ["grow-2"]
    assert cpu["mem_total_mb"] > cpu["mem_used_mb"] > 0
    text = expt("ps", cwd=folder, columns=120).stdout
    assert "devices" in text and "grow-1" in text and "queue (1, in order): grow-2" in text
    for run_id in ("grow-1", "grow-2"):
        (folder / "runs" / run_id / "go").touch()
        wait_for(lambda: show(folder, run_id)["status"] == "completed", timeout=120, what=f"{run_id} completed")


def test_without_an_nvidia_driver_nvml_says_so_and_nothing_breaks(tmp_path: Path):
    from expt.core.devices import MachineSampler, Nvml

    nvml = Nvml()
    if nvml.ok:
        pytest.skip("an NVIDIA driver is present on this machine")
    assert nvml.reason.startswith("no NVIDIA driver") and nvml.count() == 0 and nvml.sample() == []
    cpu, gpus = MachineSampler().sample()
    assert gpus == [] and cpu.cores >= 1 and 0 <= cpu.percent <= 100
    folder = write_project(tmp_path / "proj", "[experiments.e]\nrecipe = 'scaling'\n")
    data = json.loads(expt("ps", "--json", cwd=folder).stdout)
    assert data["nvml"].startswith("no NVIDIA driver") and [d["name"] for d in data["devices"]] == ["cpu"]
    assert "no NVIDIA driver" in expt("ps", cwd=folder, columns=120).stdout


def test_an_out_of_memory_error_says_what_the_device_had_and_the_peak():
    from expt.core.worker import explain

    error = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    line = explain(error, "cuda:0 has 24,576 MiB, this run peaked at 23,901 MiB")
    assert line.startswith("out of memory (cuda:0 has 24,576 MiB, this run peaked at 23,901 MiB) (lower batch_size")
    assert "\n" not in line and explain(MemoryError(), "cuda:0 has 1 MiB").startswith("out of memory (lower")


def test_a_gpu_run_that_never_got_busy_says_so_once(tmp_path: Path):
    from expt.core.sysmon import SystemMonitor
    from expt.core.tracking import Tracker

    (tmp_path / "metrics.jsonl").touch()
    with Tracker(tmp_path) as tracker:
        monitor = SystemMonitor(tracker, 1)
        monitor.gpu_util = [20.0, 35.0, 41.0]
        assert "stayed under 50% for the whole run (mean 32%)" in monitor.low_utilisation_note()
        monitor.gpu_util.append(80.0)
        assert monitor.low_utilisation_note() is None
        monitor.gpu_util = [10.0]
        assert monitor.low_utilisation_note() is None  # too few samples to tell


def test_the_worker_records_sys_lines_for_recipes_too(tmp_path: Path):
    folder = write_project(tmp_path / "proj", f'''\
[experiments.tiny]
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
shots = 2
img_size = 32
epochs = 2
batch_size = 8
sys_interval = 1
''')
    assert expt("run", "tiny", cwd=folder, timeout=300).returncode == 0
    run = show(folder, "tiny-1")
    assert run["summary"]["peak_rss_mb"] > 100 and "sys/rss_mb" in run["metrics"]
