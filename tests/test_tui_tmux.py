"""`expt tui` as a user runs it: in tmux at 80x24, driven by send-keys, read back with capture-pane."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXPT = str(Path(sys.executable).with_name("expt"))

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tmux(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30)


def wait_for_screen(session: str, *texts: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session).stdout
        if all(text in screen for text in texts):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{texts} not on the screen after {timeout}s:\n{screen}")


def wait_until_gone(session: str, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text in tmux("capture-pane", "-p", "-t", session).stdout:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} still on the screen after {timeout}s")
        time.sleep(0.2)


def test_expt_tui_in_tmux_at_80x24(finished_copy: Path):
    session = f"expt-tui-test-{id(finished_copy)}"
    command = f"{EXPT} -f {finished_copy / 'experiments.toml'} tui --images halfcell"
    started = tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", session, command)
    assert started.returncode == 0, started.stderr
    try:
        screen = wait_for_screen(session, "tiny-1", "tiny-2", "2 completed", "palette")
        lines = screen.rstrip("\n").splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert lines[0].lstrip().startswith("expt") and "1 Runs" in lines[0] and "2 Experiments" in lines[0]
        assert "/ filter" in lines[1]
        header = lines[2].split()
        assert header[:3] == ["id", "status", "mode"]
        assert "Compare" in lines[-1] and "Help" in lines[-1] and "palette" in lines[-1]
        row = next(line for line in lines if "tiny-1" in line).split()
        assert row[:3] == ["tiny-1", "completed", "e2e"] and "2/2" in row

        tmux("send-keys", "-t", session, "2")
        screen = wait_for_screen(session, "experiment", "recipe", "long enough to be stopped")
        assert "mode=[e2e, fc] = 2 runs" in screen

        tmux("send-keys", "-t", session, "1")
        wait_until_gone(session, "long enough to be stopped")
        tmux("send-keys", "-t", session, "Enter")
        screen = wait_for_screen(session, "Overview", "Charts", "Log", "Tables", "params", "summary")
        assert "best top1" in screen
        tmux("send-keys", "-t", session, "Tab", "Tab")
        wait_for_screen(session, "Best metric:")  # the log tab: the run's own last line

        tmux("send-keys", "-t", session, "Escape")
        wait_until_gone(session, "Overview")
        tmux("send-keys", "-t", session, "?")
        wait_for_screen(session, "Keys: Runs", "Compare", "Resume")
        tmux("send-keys", "-t", session, "Escape")
        wait_until_gone(session, "Keys: Runs")
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 20
        while tmux("has-session", "-t", session).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tmux("has-session", "-t", session).returncode != 0, "q did not quit"
    finally:
        tmux("kill-session", "-t", session)
