"""Tags and notes: event lines in the run folder, through the CLI (one real subprocess), ls --tag, show, reindex,
user text kept inert, an old runs.db migrated, and the TUI's filter and note editor."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from conftest import CONTROL, MARKUP, expt, screen_text, until, until_shown
from expt.project import Project
from expt.store import Store


@pytest.fixture
def tagged(finished_copy: Path) -> Path:
    return finished_copy


def test_tag_untag_note_through_the_cli(tagged: Path, cli):
    result = expt("tag", "tiny", "baseline", cwd=tagged)  # an experiment name: all its runs
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tagged 2 runs baseline: tiny-1, tiny-2"
    events = lambda: [orjson.loads(line) for line in (tagged / "runs/tiny-1/metrics.jsonl").read_bytes().splitlines()  # noqa: E731
                      if b'"event":"tags"' in line or b'"event":"note"' in line]
    assert [(e["event"], e["add"]) for e in events()] == [("tags", ["baseline"])]
    again = cli("tag", "tiny-1", "baseline")
    assert again.exit_code == 0 and "already tagged baseline: tiny-1" in again.output
    assert len(events()) == 1  # idempotent: nothing new written
    assert cli("tag", "tiny-2", "fc-only").exit_code == 0
    assert cli("untag", "tiny-1", "tiny-2", "baseline").output.startswith("untagged 2 runs baseline")
    assert cli("note", "tiny-2", "lr too high").output.strip() == "noted on tiny-2: lr too high"
    assert cli("note", "tiny-2").output.strip() == "lr too high"
    assert [r["id"] for r in cli.json("ls", "--tag", "fc-only")] == ["tiny-2"]
    assert cli.json("ls", "--tag", "fc-only", "--tag", "baseline") == []
    assert "tags" in cli("ls").output.splitlines()[0]  # a tags column once some run has a tag
    shown = cli.json("show", "tiny-2")
    assert shown["tags"] == ["fc-only"] and shown["note"] == "lr too high"
    text = cli("show", "tiny-2").output
    assert "tags fc-only" in text and "note lr too high" in text
    assert cli("note", "tiny-2", "").output.strip() == "cleared the note of tiny-2"
    for bad in ("two words", "-x", "a" * 65, "tab\there", ""):
        result = cli("tag", "tiny-1", "--", bad)  # after --, so that -x reaches the check, not click's options
        assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    assert cli("tag", "tiny-1").exit_code == 2

    # reindex rebuilds them from the event lines
    cli("note", "tiny-1", "keep me")
    before = {r["id"]: (r["tags"], r["note"]) for r in cli.json("ls")}
    for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
        (tagged / name).unlink(missing_ok=True)
    assert cli("reindex").exit_code == 0
    assert {r["id"]: (r["tags"], r["note"]) for r in cli.json("ls")} == before == {
        "tiny-1": ([], "keep me"), "tiny-2": (["fc-only"], "")}


def test_user_text_stays_inert(tagged: Path, cli):
    assert cli("tag", "tiny-1", "[bold]x[/]").exit_code == 0
    assert cli("note", "tiny-1", MARKUP + CONTROL).exit_code == 0
    assert cli.json("show", "tiny-1")["note"] == MARKUP + CONTROL
    result = expt("show", "tiny-1", cwd=tagged)
    assert result.returncode == 0 and "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert MARKUP in result.stdout and "[bold]x[/]" in result.stdout
    listed = expt("ls", cwd=tagged)
    assert "[bold]x[/]" in listed.stdout and "\x1b" not in listed.stdout


def test_a_version_1_runs_db_migrates(tagged: Path, cli):
    db = tagged / "runs.db"
    with sqlite3.connect(db) as conn:  # what an older expt left: no tags or note columns, user_version 1
        conn.execute("ALTER TABLE runs DROP COLUMN tags")
        conn.execute("ALTER TABLE runs DROP COLUMN note")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_tags_and_note'")
        conn.execute("PRAGMA user_version = 1")
    with Store(db) as store:
        assert [(r.tags, r.note) for r in store.runs()] == [([], ""), ([], "")]
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert cli("tag", "tiny-1", "old").exit_code == 0
    assert cli.json("show", "tiny-1")["tags"] == ["old"]


def test_the_tui_filters_by_tag_and_edits_a_note(tagged: Path, cli):
    from expt.tui.app import create_app

    assert cli("tag", "tiny-2", "keeper").exit_code == 0

    async def scenario():
        app = create_app(Project(tagged / "experiments.toml"), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            table = app.runs_screen.table
            await until(pilot, lambda: len(table.ordered_rows) == 2, what="the two runs")
            await until(pilot, lambda: _tags_column(app) == {"tiny-1": "", "tiny-2": "keeper"},
                        what="the tags column")
            await pilot.press("slash", *"tag=keeper", "enter")
            await until(pilot, lambda: len(table.ordered_rows) == 1, what="the tagged run")
            await until_shown(pilot, app, "1 of 1 matching")
            await pilot.press("slash", "end", *" >", "enter")  # a bad filter: the message and a caret under it
            await until_shown(pilot, app, "filter: expected a name before '>'")
            lines = [line.rstrip() for line in screen_text(app).splitlines()]
            at = lines.index("filter: expected a name before '>'")
            assert lines[at + 1:at + 3] == ["tag=keeper >", "           ^"]
            assert len(table.ordered_rows) == 1  # the last good filter holds
            await pilot.press("slash", "end", "backspace", "enter")
            await until(pilot, lambda: not app.runs_screen.filter_error.display, what="the error gone")
            table.move_cursor(row=0)
            await pilot.press("enter")
            await until_shown(pilot, app, "tags keeper")
            await pilot.press("n")
            await until(pilot, lambda: type(app.screen).__name__ == "EditTextScreen", what="the note editor")
            await pilot.press(*"[red]checked[/]", "enter")
            await until_shown(pilot, app, "note [red]checked[/]")
            await pilot.press("t")
            await until(pilot, lambda: type(app.screen).__name__ == "EditTextScreen", what="the tags editor")
            await pilot.press("end", *" [b]paper", "enter")
            await until_shown(pilot, app, "tags keeper [b]paper")
            await pilot.press("escape")
            await until(pilot, lambda: _tags_column(app) == {"tiny-2": "keeper [b]paper"},
                        what="the new tags in the Runs table")

    asyncio.run(scenario())
    assert cli.json("show", "tiny-2")["note"] == "[red]checked[/]"
    assert cli.json("show", "tiny-2")["tags"] == ["keeper", "[b]paper"]


def _tags_column(app) -> dict[str, str]:
    """The Runs table's tags column as the screen shows it: run id -> its cell, when the column is on screen."""
    lines = screen_text(app).splitlines()
    header = next((line for line in lines if " id " in line and " status " in line), "")
    at = header.find(" tags ")
    if at < 0:
        return {}
    end = next((i for i in range(at + 6, len(header)) if header[i] != " "), len(header))
    cells = {}
    for line in lines:
        ids = [w for w in line.split()[:2] if w.startswith("tiny-")]  # the id, after a selection mark or not
        if ids:
            cells[ids[0]] = line[at:end].strip()
    return cells
