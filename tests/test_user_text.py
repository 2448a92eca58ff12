"""User text is data: hostile descriptions, params, errors, log lines and imported files reach the terminal
verbatim (control codes visibly escaped), never as markup or control codes, in every command and screen."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

from conftest import CONTROL, MARKUP, screen_text, toml_string, until_shown, write_project
from expt.formatting import inert

HOSTILE = f"{MARKUP} {CONTROL} e\u0301 🧪 " + "z" * 10_000
SHORT = HOSTILE[:-10_000]
# What the user must see of SHORT: the markup as written, each control code as its escape.
SHOWN = ("[/]", "[bold red]loud[/]", "[link=file:///etc/passwd]x[/link]", "\\x1b[31mred", "\\x07link",
         "over\\rwrite", "nul\\x00", "\\u202eevil\\u200f", "e\u0301", "🧪")
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


HOSTILE_TOML = f"""\
[experiments.bad]
recipe = "finetune"
description = {toml_string(SHORT)}
model = "test_efficientnet"
pretrained = false
shots = 2
img_size = 32
epochs = 1

[experiments.bad.sweep]
checkpoint = [{toml_string("ckpt/" + MARKUP)}, {toml_string("ckpt/" + CONTROL.replace(chr(0), ''))}]
"""


def assert_harmless(out: str, *pieces: str) -> None:
    """No control code reaches the terminal, and every piece is there as written (wrapping aside)."""
    assert not UNSAFE.search(out.replace("\n", "")), repr(UNSAFE.search(out.replace("\n", "")))
    flat = "".join(line.strip() for line in out.splitlines())
    for piece in pieces:
        assert piece in flat, piece


def expt_bytes(*args: str, cwd: Path) -> tuple[int, str]:
    """``expt`` as a subprocess in a 400-column terminal, its output exactly as the terminal gets it (no newline
    translation, so a carriage return shows), stdout and stderr together."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    env.pop("EXPT_FILE", None)
    done = subprocess.run([sys.executable, "-m", "expt", *args], cwd=cwd, capture_output=True, env=env, timeout=300)
    return done.returncode, (done.stdout + done.stderr).decode()


def write_hostile_timm_folder(folder: Path) -> None:
    import yaml
    from timm.utils import update_summary

    folder.mkdir(parents=True)
    (folder / "args.yaml").write_text(yaml.safe_dump({"model": "resnet18", "lr": 0.1, "epochs": 2,
                                                      "experiment": SHORT, "data_dir": "/data/" + MARKUP}))
    for epoch, top1 in enumerate((40.0, 55.5)):
        update_summary(epoch, OrderedDict(loss=2.0), OrderedDict(loss=1.5, top1=top1), str(folder / "summary.csv"),
                       lr=0.1)


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real runs that failed on hostile checkpoint paths, a hostile description, hostile lines in a log
    (as a user's script would print them) and a timm folder whose args.yaml holds hostile values."""
    root = write_project(tmp_path_factory.mktemp("hostile") / "proj", HOSTILE_TOML)
    _, ran = expt_bytes("run", "bad", cwd=root)
    assert "no such file" in ran, ran
    assert_harmless(ran, "[bold red]loud[/]")
    with open(root / "runs" / "bad-1" / "log.txt", "a") as log:
        log.write(f"printed by the script: {SHORT}\n")
    write_hostile_timm_folder(root.parent / "timm-out" / "20240101-resnet18")
    status, imported = expt_bytes("import", "timm", str(root.parent / "timm-out"), cwd=root)
    assert status == 0, imported
    assert_harmless(imported)
    return root


def test_inert_escapes_every_control_code_and_keeps_the_rest():
    shown = inert(HOSTILE)
    assert not UNSAFE.search(shown)
    for piece in SHOWN:
        assert piece in shown, piece
    assert shown.endswith("z" * 10_000) and inert("a\tb\nc") == "a\tb\nc"


def test_a_10000_character_description_is_listed_whole(tmp_path: Path):
    write_project(tmp_path, HOSTILE_TOML.replace(toml_string(SHORT), toml_string(HOSTILE)))
    status, out = expt_bytes("experiments", cwd=tmp_path)
    assert status == 0, out
    assert_harmless(out, *SHOWN, "z" * 80)
    assert out.count("z") == 10_000


def test_export_to_a_file_keeps_the_text_exactly(hostile_project: Path, tmp_path: Path):
    import orjson

    status, out = expt_bytes("export", "-F", "json", "-o", str(tmp_path / "runs.json"), cwd=hostile_project)
    assert status == 0, out
    params = {r["id"]: r["params"] for r in orjson.loads((tmp_path / "runs.json").read_bytes())}
    assert params["timm-1"]["experiment"] == SHORT and params["bad-1"]["checkpoint"] == "ckpt/" + MARKUP


@pytest.mark.slow
@pytest.mark.parametrize("command, pieces", [
    (("experiments",), SHOWN),
    (("ls",), ("ckpt/[/] [bold red]loud[/]", "ckpt/\\x1b[31mred")),
    (("show", "bad-1"), ("ckpt/[/] [bold red]loud[/] [link=file:///etc/passwd]x[/link]", "no such file")),
    (("show", "bad-2"), ("ckpt/\\x1b[31mred \\x1b]8;;http://evil\\x07link over\\rwrite",)),
    (("logs", "bad-1"), ("printed by the script: [/] [bold red]loud[/]", "\\x1b[31mred", "over\\rwrite", "nul\\x00")),
    (("compare", "bad-1", "bad-2"), ("[bold red]loud[/]", "\\x1b[31mred")),
    (("ls", "timm-1"), ("timm-1",)),
    (("show", "timm-1"), SHOWN + ("/data/[/] [bold red]loud[/]",)),
    (("plot", "bad-1", "timm-1", "--metric", "eval_top1"), ("eval_top1 per epoch",)),
    (("export", "-F", "md"), ("[bold red]loud[/]", "\\x1b[31mred")),
    (("export", "-F", "json"), ("[bold red]loud[/]", "\\u001b[31mred", "\\u202eevil")),
    (("ps",), ("nothing queued or running",)),
])
def test_every_command_shows_hostile_text_as_written(hostile_project: Path, command: tuple[str, ...],
                                                     pieces: tuple[str, ...]):
    status, out = expt_bytes(*command, cwd=hostile_project)
    assert status == 0 and "Traceback" not in out, out
    assert_harmless(out, *pieces)


# -- the TUI ---------------------------------------------------------------------------------------------------

def assert_screen_harmless(app, *pieces: str) -> None:
    shown = screen_text(app)
    assert not UNSAFE.search(shown.replace("\n", "")), shown
    for piece in pieces:
        assert piece in shown, f"{piece!r} not on screen:\n{shown}"


@pytest.mark.slow
def test_every_screen_shows_hostile_text_as_written(hostile_project: Path, tmp_path: Path):
    import asyncio

    from expt.project import Project
    from expt.tui.app import create_app

    config = hostile_project / "experiments.toml"
    original = config.read_text()

    async def scenario():
        app = create_app(Project(config), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(200, 50), notifications=True) as pilot:
            await until_shown(pilot, app, "bad-1", "bad-2", "timm-1", "ckpt/[/] [bold red]loud[/] [link=file:///e")
            assert_screen_harmless(app, "ckpt/\\x1b[31mred \\x1b]8;;http://evil\\x07link over\\rwrite")

            await pilot.press("2")  # experiments: the table and the detail line
            await until_shown(pilot, app, "checkpoint=[ckpt/[/] [bold red]loud[/]")
            assert_screen_harmless(app, "[/] [bold red]loud[/] [link=file:///etc/passwd]x[/link] \\x1b[31mred",
                                   "over\\rwrite nul\\x00 \\u202eevil\\u200f e\u0301 🧪")

            await pilot.press("ctrl+p")  # the palette's launch command carries the description
            await pilot.press(*"Launch bad")
            await until_shown(pilot, app, "2 runs: [/] [bold red]loud[/] [link=file:///etc/passwd]x[/link]")
            assert_screen_harmless(app)
            await pilot.press("escape")

            config.write_text(original + '\n[experiments.worse]\nrecipe = "finetune"\n'
                              'mode = "[/] [bold red]loud[/] \\u001b[31mred"\n')
            await until_shown(pilot, app, "worse.mode: '[/] [bold red]loud[/] \\x1b[31mred' is not one of")
            assert_screen_harmless(app)
            await pilot.press("enter")  # nothing to launch from a broken file: a toast says so
            await until_shown(pilot, app, "no experiment to launch")
            config.write_text(original)

            app.open_run("bad-2")  # the header's error line and the params
            await until_shown(pilot, app, "error: checkpoint 'ckpt/\\x1b[31mred \\x1b]8;;http://evil\\x07link")
            assert_screen_harmless(app, "ckpt/\\x1b[31mred")
            await pilot.press("escape")

            app.open_run("bad-1")
            await until_shown(pilot, app, "error: checkpoint 'ckpt/[/] [bold red]loud[/] [link=file:///etc/passwd]x")
            await pilot.press("tab", "tab")  # the log, as the script printed it
            await until_shown(pilot, app, "printed by the script: [/] [bold red]loud[/] [link=file:///etc/passwd]x",
                              "\\x1b[31mred \\x1b]8;;http://evil\\x07link over\\rwrite nul\\x00 \\u202eevil")
            assert_screen_harmless(app)
            await pilot.press("escape")

            app.open_run("timm-1")  # values from an imported args.yaml, on the Overview tab
            await until_shown(pilot, app, "timm-1  completed")
            await pilot.press("shift+tab", "shift+tab")
            await until_shown(pilot, app, "/data/[/] [bold red]loud[/] [link=file:///etc/passwd]x[/link]",
                              "[/] [bold red]loud[/] [link=file:///etc/passwd]x[/link] \\x1b[31mred")
            assert_screen_harmless(app)
            await pilot.press("escape")

            await pilot.press("1", "G")  # compare the two failed runs: their config difference
            await until_shown(pilot, app, "bad-1", "bad-2")
            for run_id in ("bad-1", "bad-2"):
                while app.runs_screen.table.get_row_at(app.runs_screen.table.cursor_row)[1].plain != run_id:
                    await pilot.press("k")
                await pilot.press("space")
            await pilot.press("c")
            await until_shown(pilot, app, "checkpoint  ckpt/[/] [bold red]loud[/] [link=file:///etc/pa",
                              "ckpt/\\x1b[31mred \\x1b]8;;http://evil")
            assert_screen_harmless(app)
            await pilot.press("q")

    try:
        asyncio.run(scenario())
    finally:
        config.write_text(original)
