"""Item 4: the TUI. With 32 runs logging 20 points a second each (real Trackers writing real run folders,
from writer processes), how long a keypress takes to reach the screen (move, filter, open a run) and how
long new metric lines take to reach it (live refresh); the CPU `expt tui` uses when nothing runs; the
time `expt tui` takes to open on a runs.db of 10,000 runs.

"Reaches the screen": the app runs in-process (Textual's headless driver), and a hook on the app's display
call also encodes the compositor's update into the terminal bytes a real terminal would get (what the
headless driver skips), then stamps the time. A keypress is timed from the key event's posting to the
first such update that shows its effect; a metric line from the moment its writer's flush returned (the
writers log each flush's time on the same monotonic clock) to the first update whose runs table shows its
step. Idle CPU and open time are measured on the real `expt tui` command in tmux at 80x24 when tmux is
installed (open: until the status line reports the page), else in-process.

Writers report their runs as running on another host, so the TUI's reaper judges them by their
heartbeat (as it does runs on a cluster's nodes) instead of looking for a worker process.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

import common
from common import Bench, Figure, result_under, value

WRITER_HOST = "bench-writer"
SIZE = (80, 24)  # the terminal (tmux over SSH); a larger one draws more cells per update


# -- the writers (a subprocess: `bench_tui.py --writer LOG SECONDS RATE RUN_DIR...`) -------------------------


def writer_main(argv: list[str]) -> None:
    from expt.core.tracking import Tracker

    log_path, seconds, rate, *run_dirs = argv
    trackers = [Tracker(d, flush_interval=3600) for d in run_dirs]
    for tracker in trackers:
        tracker.log_status("running", pid=os.getpid(), host=WRITER_HOST, device="cpu")
        tracker.start_heartbeat()
    flushes: list[tuple[str, int, float]] = []
    period = 1.0 / float(rate)
    start = time.monotonic()
    last_flush = start
    step = 0
    stop = Path(log_path).with_suffix(".stop")
    while time.monotonic() - start < float(seconds) and not stop.exists():
        step += 1
        for tracker in trackers:
            tracker.log_metrics(step, train_loss=float(step), top1=50.0 + 40.0 * (1 - 0.99 ** step))
        if step % int(rate) == 0:
            for tracker in trackers:
                tracker.log_progress(step // int(rate), 1000)
        now = time.monotonic()
        if now - last_flush >= 0.5:  # what Tracker does by itself (flush_interval 0.5 s), timed here
            for tracker in trackers:
                tracker.flush()
                flushes.append((Path(tracker.run_dir).name, step, time.monotonic()))
            last_flush = now
        time.sleep(max(0.0, start + step * period - time.monotonic()))
    for tracker in trackers:
        tracker.log_summary(best_top1=50.0 + 40.0 * (1 - 0.99 ** step))
        tracker.log_status("completed")
        tracker.close()
    Path(log_path).write_bytes(orjson.dumps(flushes))


def start_writers(runs: list, workers: int, seconds: float, rate: int,
                  work: Path) -> list[tuple[subprocess.Popen, Path]]:
    groups = [runs[i::workers] for i in range(workers)]
    started = []
    for i, group in enumerate(g for g in groups if g):
        log = work / f"writer-{i}.json"
        process = subprocess.Popen([sys.executable, __file__, "--writer", str(log), str(seconds), str(rate),
                                    *(str(r.path) for r in group)], cwd=common.ROOT)
        started.append((process, log))
    return started


# -- measuring inside the app ------------------------------------------------------------------------------


class Probe:
    """Stamps every screen update and checks the conditions waiting on it."""

    def __init__(self, app) -> None:
        self.app = app
        self.waiting: list[tuple[str, float, object]] = []
        self.latencies: dict[str, list[float]] = {}
        self.shown_steps: list[tuple[int, float, float]] = []  # (rid, step shown, time)
        self._last: dict[int, float] = {}
        original = app._display

        def display(screen, renderable) -> None:
            if renderable is not None and hasattr(renderable, "render_segments"):
                renderable.render_segments(app.console)  # the bytes a terminal would be sent
            now = time.monotonic()
            for item in list(self.waiting):
                name, started, condition = item
                if condition():
                    self.latencies.setdefault(name, []).append(now - started)
                    self.waiting.remove(item)
            table = app.runs_screen.table
            if app.screen is app.runs_screen:
                for rid, row in table.rows_by_rid.items():
                    if row.loss is not None and self._last.get(rid) != row.loss:
                        self._last[rid] = row.loss
                        self.shown_steps.append((rid, row.loss, now))
            original(screen, renderable)

        app._display = display

    async def key(self, pilot, name: str, key: str, condition, timeout: float = 10.0) -> None:
        from textual import events

        character = key if len(key) == 1 else None
        entry = (name, time.monotonic(), condition)
        self.waiting.append(entry)
        self.app.post_message(events.Key(key, character))
        deadline = time.monotonic() + timeout
        while entry in self.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if entry in self.waiting:
            self.waiting.remove(entry)
            raise RuntimeError(f"{name}: the screen never showed the effect of {key!r}")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def percentile_figure(values: list[float], unit_scale: float = 1000.0) -> Figure:
    """A figure whose cell reads as the p95 (the median of one value) in milliseconds."""
    return Figure([p95(values) * unit_scale], "ms")


async def drive(project, probe_samples: int, watch: float) -> dict[str, list[float]]:
    """Run the app, press keys while the writers log, then watch ``watch`` seconds without a key;
    returns the latencies by name (seconds)."""
    from expt.tui.app import create_app
    from expt.tui.rows import parse_filter
    from expt.tui.screens.run_detail import RunDetailScreen

    app = create_app(project, image_mode="halfcell")  # the default interval, as `expt tui` runs
    results: dict[str, list[float]] = {}
    async with app.run_test(size=SIZE) as pilot:
        probe = Probe(app)
        screen = app.runs_screen
        deadline = time.monotonic() + 30
        while (screen.loading or not screen.table.row_count) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        table = screen.table
        rng = random.Random(0)
        await pilot.press("down", "up", "enter")  # once untimed: the detail screen's modules imported
        await pilot.pause(0.5)
        await pilot.press("escape")
        await pilot.pause(0.3)
        for _ in range(probe_samples):
            before = table.cursor_row
            down = before < table.row_count - 1
            target = before + 1 if down else before - 1
            await probe.key(pilot, "move", "down" if down else "up", lambda t=target: table.cursor_row == t)
            await asyncio.sleep(rng.uniform(0.05, 0.2))
        await pilot.press("slash")
        box = screen.query_one("#filter")
        for i in range(probe_samples):
            typed = "2" if i % 2 == 0 else "backspace"
            expected = "2" if typed == "2" else ""
            answered = ("filter_db", time.monotonic(), lambda e=expected: box.value == e and not screen.loading
                        and screen.where == parse_filter(e))
            probe.waiting.append(answered)  # the rows runs.db adds to the ones already in memory
            await probe.key(pilot, "filter", typed, lambda e=expected: box.value == e
                            and screen.where == parse_filter(e))
            while answered in probe.waiting:
                await asyncio.sleep(0.002)
            await asyncio.sleep(rng.uniform(0.05, 0.2))
        await pilot.press("enter")
        for _ in range(probe_samples):
            await probe.key(pilot, "open", "enter", lambda: isinstance(app.screen, RunDetailScreen))
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            await probe.key(pilot, "back", "escape", lambda: app.screen is app.runs_screen)
            await asyncio.sleep(rng.uniform(0.05, 0.2))
        devices = app.devices_screen  # issue 17: the feed samples the machine while it is shown
        for _ in range(probe_samples):
            await probe.key(pilot, "devices", "3", lambda: app.screen is devices)
            await asyncio.sleep(rng.uniform(0.3, 0.6))  # long enough for a sample or two to be drawn
            await probe.key(pilot, "devices_back", "1", lambda: app.screen is app.runs_screen)
            await asyncio.sleep(rng.uniform(0.05, 0.2))
        watching = time.monotonic()  # from here on nobody types: the live refresh alone
        await pilot.pause(watch)
        results.update(probe.latencies)
        results["_watching"] = watching  # type: ignore[assignment]
        results["_shown"] = probe.shown_steps  # type: ignore[assignment]
        results["_ids"] = {row.id: rid for rid, row in table.rows_by_rid.items()}  # type: ignore[assignment]
    return results


def refresh_latencies(shown: list[tuple[int, float, float]], ids: dict[str, int], logs: list[Path],
                      since: float) -> list[float]:
    """For each flush a writer made after ``since`` (the keys done): when the table first showed that step
    (or a later one) for its run. While keys are pressed, live updates wait for a pause on purpose."""
    by_rid: dict[int, list[tuple[float, float]]] = {}
    for rid, step, at in shown:
        by_rid.setdefault(rid, []).append((step, at))
    latencies = []
    for log in logs:
        for run_id, step, flushed in orjson.loads(log.read_bytes()):
            if flushed < since:
                continue
            rid = ids.get(run_id)
            for shown_step, at in by_rid.get(rid, ()):
                if shown_step >= step and at >= flushed:
                    latencies.append(at - flushed)
                    break
    return latencies


def live_project(work: Path, runs: int, history: int):
    """``history`` completed runs (bench/common) plus ``runs`` queued ones for the writers."""
    from expt.core.recipes import get_recipe
    from expt.project import Project
    from expt.store import Store

    if history:
        common.build_project(work, history, steps=5)
    else:
        work.mkdir(parents=True, exist_ok=True)
        (work / "experiments.toml").write_text(common.PROJECT_TOML)
    project = Project(work / "experiments.toml")
    defaults = get_recipe("finetune").params.defaults()
    with Store(project.db_path) as store:
        created = [store.create_run(project.runs_dir, experiment="live", recipe="finetune",
                                    params={**defaults, "seed": i}, varying={"seed": i}, metric="top1", goal="max")
                   for i in range(runs)]
    return project, created


def measure_live(bench: Bench, work: Path, writers_n: int, rate: int, samples: int, watch: float) -> dict:
    project, runs = live_project(work, writers_n, history=bench.size(100, 20))
    writers = start_writers(runs, min(4, writers_n), 600, rate, work)
    try:
        time.sleep(1.0)  # the writers have started logging
        results = asyncio.run(drive(project, samples, watch))
    finally:
        for _, log in writers:
            log.with_suffix(".stop").touch()
        for process, _ in writers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    results["refresh"] = refresh_latencies(results.pop("_shown"), results.pop("_ids"),  # type: ignore[arg-type]
                                           [log for _, log in writers if log.exists()],
                                           results.pop("_watching"))  # type: ignore[arg-type]
    return results


# -- the real command in tmux ---------------------------------------------------------------------------------


def tmux(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30)


def new_session(session: str, command: str) -> float:
    """Start a detached 80x24 session; returns when (perf_counter) the successful attempt began. Retried:
    a server whose last session just ended may still be on its way out when the next one starts."""
    for attempt in range(5):
        began = time.perf_counter()
        done = tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", session, command)
        if done.returncode == 0:
            return began
        time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"tmux new-session failed: {done.stderr.strip()}")


def open_in_tmux(project: Path, marker: str, timeout: float = 30.0) -> tuple[float, str, int]:
    """Seconds from starting `expt tui` in tmux until ``marker`` is on the screen; the session and pid."""
    session = f"expt-bench-{os.getpid()}-{time.monotonic_ns()}"
    command = f"exec {common.EXPT} -f {project / 'experiments.toml'} tui"
    started = new_session(session, command)
    while time.perf_counter() - started < timeout:
        if marker in tmux("capture-pane", "-p", "-t", session).stdout:
            elapsed = time.perf_counter() - started
            pid = int(tmux("list-panes", "-t", session, "-F", "#{pane_pid}").stdout.split()[0])
            return elapsed, session, pid
        time.sleep(0.01)
    screen = tmux("capture-pane", "-p", "-t", session).stdout
    tmux("kill-session", "-t", session)
    raise RuntimeError(f"`expt tui` did not show {marker!r} within {timeout}s:\n{screen}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_tmux(project: Path, seconds: float, marker: str) -> float:
    _, session, pid = open_in_tmux(project, marker)
    try:
        time.sleep(2.0)  # past the first page, the first looks at runs.db
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)
    finally:
        tmux("kill-session", "-t", session)


BARE_APP = """
from textual.app import App
from textual.widgets import Footer, Static
class Bare(App):
    def compose(self):
        yield Static("a bare Textual app: the floor of any TUI's idle cost")
        yield Footer()
Bare().run()
"""


def bare_idle_cpu_tmux(seconds: float) -> float:
    session = f"expt-bench-bare-{os.getpid()}"
    script = Path(tempfile.mkdtemp(prefix="expt-bench-bare-")) / "bare.py"
    script.write_text(BARE_APP)
    new_session(session, f"exec {sys.executable} {script}")
    try:
        deadline = time.monotonic() + 20
        while "bare Textual app" not in tmux("capture-pane", "-p", "-t", session).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("the bare Textual app did not start in tmux")
            time.sleep(0.05)
        pid = int(tmux("list-panes", "-t", session, "-F", "#{pane_pid}").stdout.split()[0])
        time.sleep(2.0)
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)
    finally:
        tmux("kill-session", "-t", session)
        shutil.rmtree(script.parent, ignore_errors=True)


def idle_cpu_in_process(project, seconds: float) -> float:
    from expt.tui.app import create_app

    async def run() -> float:
        app = create_app(project, image_mode="halfcell")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(1.0)
            before, started = time.process_time(), time.monotonic()
            await pilot.pause(seconds)
            return 100.0 * (time.process_time() - before) / (time.monotonic() - started)

    return asyncio.run(run())


def open_in_process(project, total: int) -> float:
    from expt.tui.app import create_app

    async def run() -> float:
        started = time.perf_counter()
        app = create_app(project, image_mode="halfcell")
        async with app.run_test(size=(80, 24)) as pilot:
            while app.runs_screen.table.row_count == 0 or app.runs_screen.total != total:
                await pilot.pause(0.01)
            return time.perf_counter() - started

    return asyncio.run(run())


# -- the benchmark -------------------------------------------------------------------------------------------


def main() -> None:
    bench = Bench("tui", "The TUI",
                  "Keypress and live-refresh latency (p95) with 32 runs logging 20 points/s each through real "
                  "Trackers; idle CPU of `expt tui`; its open time on a 10,000-run runs.db.")
    writers_n, rate = bench.size(32, 4), 20
    samples = bench.size(40, 3)
    watch = bench.size(15.0, 1.0)
    big = bench.size(10_000, 300)
    use_tmux = shutil.which("tmux") is not None and not bench.quick
    work = Path(tempfile.mkdtemp(prefix="expt-bench-tui-"))
    try:
        quiet = measure_live(bench, work / "quiet", 1, rate, samples, watch)
        loaded = measure_live(bench, work / "live", writers_n, rate, samples, watch)
        for name, label in (("move", "move (down/up)"), ("filter", "filter (type, backspace)"),
                            ("open", "open a run (enter)"), ("back", "back to the runs (escape)"),
                            ("devices", "open the Devices screen (3)"),
                            ("devices_back", "back to the runs from Devices, which sampled meanwhile (1)")):
            bench.row(f"keypress: {label}, p95", percentile_figure(loaded[name]), percentile_figure(quiet[name]),
                      "1 run logging", result_under(100, "ms"))
        bench.row("filter: until runs.db's answer is on screen too, p95", percentile_figure(loaded["filter_db"]),
                  percentile_figure(quiet["filter_db"]), "1 run logging", result_under(300, "ms"))
        bench.row("live refresh: a flushed metric line to the screen, p95", percentile_figure(loaded["refresh"]),
                  percentile_figure(quiet["refresh"]), "1 run logging", result_under(300, "ms"))
        bench.note(f"{writers_n} runs x {rate} points/s; {samples} presses of each key, then {watch:.0f} s without a "
                   f"key: {len(loaded['refresh'])} flushes matched on screen (median "
                   f"{1000 * statistics.median(loaded['refresh']):.0f} ms); the feed looks at runs.db every 0.2 s, "
                   "so a line waits up to that long before it is read, and live updates wait while keys are typed")
        built = common.build_project(work / "big", big, steps=3)
        from expt.project import Project

        big_project = Project(work / "big" / "experiments.toml")
        if use_tmux:
            marker = f"of {big} runs"
            opens = []
            for _ in range(bench.repeats(3, 1)):
                elapsed, session, _pid = open_in_tmux(work / "big", marker)
                tmux("kill-session", "-t", session)
                opens.append(elapsed)
            ls = common.interleaved({"ls": common.command([common.EXPT, "ls"], cwd=work / "big")}, bench.repeats(3, 1))
            bench.row(f"`expt tui` opens on {big:,} runs (tmux, until the first page is on screen)",
                      common.seconds(opens), ls["ls"], f"`expt ls` on the same {big:,} runs", result_under(1.5, "s"))
            idle = idle_cpu_tmux(work / "big", bench.size(10.0, 2.0), marker)
            floor = bare_idle_cpu_tmux(bench.size(10.0, 2.0))
            bench.row("idle CPU of `expt tui` (nothing running; % of one core)", value(idle, "%"),
                      value(floor, "%"), "a bare Textual app", result_under(5, "%"))
        else:
            opened = common.repeat(lambda: open_in_process(big_project, built["runs"]), bench.repeats(3, 1))
            bench.row(f"the TUI opens on {big:,} runs (in-process, first page shown)", opened,
                      target=result_under(1.5, "s"))
            idle = idle_cpu_in_process(big_project, bench.size(10.0, 1.0))
            bench.row("idle CPU of the TUI (nothing running; % of one core, in-process)", value(idle, "%"),
                      target=result_under(5, "%"))
            if not bench.quick:
                bench.note("tmux is not installed: open time and idle CPU measured in-process")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.write()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2:])
    else:
        main()
