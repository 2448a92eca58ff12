"""The TUI through Textual's Pilot, against real runs.db files and run folders made by the real worker.

Every screen is driven by keys as a user would; nothing is mocked: the live feed ingests real
metrics.jsonl files, launches go through the real launcher, a detached scheduler and worker
processes, and stop/resume signal real workers.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest

from conftest import expt, screen_text, until, until_shown, wait_for, write_project
from expt.project import Project
from expt.store import Store
from expt.tui.app import ExptApp, create_app


def make_app(folder: Path, **options) -> ExptApp:
    return create_app(Project(folder / "experiments.toml"), interval=0.2, image_mode="halfcell", **options)


def run(coroutine) -> None:
    asyncio.run(coroutine)


def table_text(table) -> list[dict[str, str]]:
    """The runs table as shown: one dict per row (in screen order), column key -> plain text."""
    rows = []
    for row in table.ordered_rows:
        cells = table.get_row(row.key)
        rows.append({str(c.key.value): str(getattr(v, "plain", v)) for c, v in zip(table.ordered_columns, cells)})
    return rows


def shown_ids(app: ExptApp) -> list[str]:
    return [r["id"] for r in table_text(app.runs_screen.table)]


def statuses(app: ExptApp) -> dict[str, str]:
    return {r["id"]: r["status"] for r in table_text(app.runs_screen.table)}


def notes(app: ExptApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


# -- browsing real finished runs -----------------------------------------------------------------------------


def test_runs_filter_sort_select_compare_samples_detail(finished_copy: Path):
    async def scenario():
        app = make_app(finished_copy)
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await until(pilot, lambda: len(shown_ids(app)) == 2, what="the two runs")
            rows = {r["id"]: r for r in table_text(app.runs_screen.table)}
            assert shown_ids(app) == ["tiny-2", "tiny-1"]  # newest first
            assert rows["tiny-1"]["status"] == "completed" and rows["tiny-1"]["p:mode"] == "e2e"
            assert rows["tiny-2"]["p:mode"] == "fc" and rows["tiny-1"]["epoch"] == "2/2"
            with Store(finished_copy / "runs.db") as store:
                best = {r.id: r.best for r in store.runs()}
            assert float(rows["tiny-1"]["best"]) == pytest.approx(best["tiny-1"], abs=0.01)
            assert rows["tiny-1"]["trend"] and rows["tiny-1"]["loss"]
            await until_shown(pilot, app, "2 completed")  # the nav bar's counts

            # filter: a param, a status, free text; escape clears it
            await pilot.press("slash", *"mode=fc", "enter")
            await until(pilot, lambda: shown_ids(app) == ["tiny-2"], what="the filtered table")
            assert "1 of 1 matching" in str(app.runs_screen.query_one("#runs-status").render())
            await pilot.press("slash", "ctrl+u", *"status=running", "enter")
            await until(pilot, lambda: shown_ids(app) == [], what="no running runs")
            await pilot.press("slash", "ctrl+u", *"e2e", "enter")
            await until(pilot, lambda: shown_ids(app) == ["tiny-1"], what="free text")
            await pilot.press("escape")
            await until(pilot, lambda: len(shown_ids(app)) == 2, what="the filter cleared")

            # sort by best (best first), then by id, through the picker
            await pilot.press("o")
            picker = app.screen
            options = picker.query_one("OptionList")
            ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
            options.highlighted = ids.index("best")
            await pilot.press("enter")
            expected = sorted(best, key=lambda i: -best[i])
            await until(pilot, lambda: shown_ids(app) == expected, what="sorted by best")

            # select both, compare: config differences, best marked, curves
            table = app.runs_screen.table
            table.move_cursor(row=0)
            await pilot.press("space", "space")
            assert len(table.selected) == 2
            await pilot.press("c")
            await until(pilot, lambda: type(app.screen).__name__ == "CompareScreen" and "best_top1" in screen_text(app),
                        what="the compare screen's metrics")
            compare = app.screen
            config = compare.query_one("#compare-config")
            assert [str(c.label) for c in config.ordered_columns] == ["param", "tiny-1", "tiny-2"]
            assert str(config.get_row_at(0)[0]) == "mode"
            metrics = {str(row[0]): [str(c) for c in row[1:]]
                       for row in (compare.query_one("#compare-metrics").get_row_at(i)
                                   for i in range(compare.query_one("#compare-metrics").row_count))}
            winner = max(best, key=best.get)
            assert metrics["best_top1"][["tiny-1", "tiny-2"].index(winner)].startswith("*")
            assert compare.query_one("#compare-chart").series.keys() == {"tiny-1", "tiny-2"}
            first_metric = compare.metric
            await until_shown(pilot, app, f"{first_metric} per epoch")
            await pilot.press("m")

            def next_chart_shown() -> bool:
                shown = screen_text(app)
                return f"{first_metric} per epoch" not in shown and f"{compare.metric} per epoch" in shown

            await until(pilot, next_chart_shown, what="the next metric's chart")

            # samples of the compared runs: real images per class, n for the other run
            await pilot.press("i")
            await until(pilot, lambda: type(app.screen).__name__ == "SamplesScreen" and app.screen.query("SampleGrid"),
                        what="the sample grid")
            grid = app.screen.query_one("SampleGrid")
            assert list(grid.pictures) == [str(d) for d in range(10)]  # the digits' class names
            assert all(len(p) == 2 for p in grid.pictures.values())  # shots = 2
            assert len(grid.query(".picture")) == 20
            first = app.screen.run_id
            other = next(r for r in ("tiny-1", "tiny-2") if r != first)
            await pilot.press("n")
            await until(pilot, lambda: app.screen.run_id == other and other in screen_text(app), what="the other run")
            await pilot.press("plus")
            await pilot.press("escape", "escape")
            await until(pilot, lambda: app.screen is app.runs_screen, what="back on the runs")

            # run detail: header, params, a chart per metric, the log, no tables
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen" and app.screen.charts,
                        what="the run detail")
            detail = app.screen
            assert {"top1", "top5", "train_loss", "eval_loss", "lr"} <= set(detail.charts)
            chart = detail.charts["top1"]
            assert chart.series[detail.run_id][0] == [1, 2]
            log_text = "\n".join(detail.query_one("#run-log").lines)
            assert "Best metric:" in log_text
            await pilot.press("tab", "tab", "tab")
            await until(pilot, lambda: detail.query_one("TabbedContent").active == "tab-tables" and
                        detail.query_one("#tables-note").display, what="the tables tab")
            await pilot.press("s")  # a completed run: nothing to stop
            await pilot.press("question_mark")
            await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen" and "Resume" in screen_text(app),
                        what="the help screen")
            described = dict((what, keys) for keys, what in app.screen.entries)
            assert described["Stop"] == "s" and described["Resume"] == "r" and described["Next tab"] == "tab"
            await pilot.press("escape", "escape")
            await until(pilot, lambda: app.screen is app.runs_screen, what="back on the runs")
            assert any("nothing to stop" in n for n in notes(app))

            # the detail screen is kept: opening the other run shows that run, nothing of the first
            first = detail.run_id
            await pilot.press("up" if table.cursor_row else "down", "enter")
            await until(pilot, lambda: app.screen is detail and detail.run_id != first and detail.charts and
                        all(set(c.series) == {detail.run_id} for c in detail.charts.values()),
                        what="the other run in the detail screen")
            assert first not in str(detail.query_one("#run-header").render())
            await pilot.press("escape")

            # the command palette reaches a screen by name
            await pilot.press("ctrl+p")
            await pilot.press(*"Experiments")
            await until_shown(pilot, app, "The experiments of experiments.toml")
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is app.experiments_screen, what="the experiments screen")
            await pilot.press("1")
            await until(pilot, lambda: app.screen is app.runs_screen, what="the runs screen")
            await pilot.press("q")
        assert app.return_code == 0

    run(scenario())


def test_experiments_screen_follows_edits_and_shows_errors(project_dir: Path):
    config = project_dir / "experiments.toml"

    async def scenario():
        app = make_app(project_dir)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("2")
            screen = app.experiments_screen
            await until(pilot, lambda: screen.table.row_count == 2, what="the experiments")
            assert [str(screen.table.get_row_at(i)[0]) for i in range(2)] == ["tiny", "long"]
            assert "mode=[e2e, fc] = 2 runs" in str(screen.query_one("#experiment-detail").render())

            config.write_text(config.read_text().replace('recipe = "finetune"\ndescription = "long',
                                                         'recipe = "finetun"\ndescription = "long'))
            problems = screen.query_one("#config-problems")
            await until_shown(pilot, app, "experiments.toml:17: long.recipe: unknown recipe 'finetun'")
            assert screen.table.row_count == 0
            await pilot.press("enter")  # nothing to launch from a broken file, and nothing queued
            await until_shown(pilot, app, "no experiment to launch")  # a toast
            assert not (project_dir / "runs").exists() or not list((project_dir / "runs").glob("*/config.toml"))

            config.write_text(config.read_text().replace('"finetun"', '"finetune"') +
                              '\n[experiments.more]\nrecipe = "finetune"\nmodel = "test_efficientnet"\n'
                              'pretrained = false\n[experiments.more.sweep]\nshots = [1, 2, 3]\n')
            await until(pilot, lambda: screen.table.row_count == 3 and not problems.display, what="the fixed file")
            assert str(screen.table.get_row_at(2)[2]).strip() == "3"
            await pilot.press("q")

    run(scenario())


def test_a_long_history_loads_a_page_at_a_time_and_filters_reach_old_runs(project_dir: Path):
    from expt.core.recipes import get_recipe

    defaults = get_recipe("finetune").params.defaults()
    with Store(project_dir / "runs.db") as store:
        for seed in range(450):
            store.create_run(project_dir / "runs", experiment="sweep", recipe="finetune",
                             params={**defaults, "seed": seed}, varying={"seed": seed}, metric="top1", goal="max")

    async def scenario():
        app = make_app(project_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.runs_screen
            await until(pilot, lambda: screen.table.row_count == 200, what="the first page")
            assert shown_ids(app)[0] == "sweep-450"
            assert "200 of 450 runs" in str(screen.query_one("#runs-status").render())
            await pilot.press("slash", *"seed=3", "enter")  # sweep-4: not in memory, found by runs.db
            await until(pilot, lambda: shown_ids(app) == ["sweep-4"], what="an old run found by its param")
            await pilot.press("escape")
            await until(pilot, lambda: screen.table.row_count == 200, what="the first page again")
            await pilot.press("G")  # the last row asks for the next page
            await until(pilot, lambda: screen.table.row_count == 400, what="the second page")
            await pilot.press("m")
            await until(pilot, lambda: screen.table.row_count == 450, what="the last page")
            assert "450 runs" in str(screen.query_one("#runs-status").render())
            await pilot.press("q")

    run(scenario())


# -- samples: a metric run's neighbours, and runs without samples ----------------------------------------------


def test_samples_screen_shows_nearest_neighbours_and_says_when_there_are_none(finished_copy: Path):
    run_dir = finished_copy / "runs" / "tiny-1"
    pngs = sorted((run_dir / "samples").glob("*.png"))
    assert len(pngs) == 20
    by_class = {int(p.name[:3]): p for p in pngs}
    queries = []
    for test_index, label in ((3, 7), (8, 2)):
        neighbours = [{"train_index": i, "class": str(c), "distance": 0.01 * (i + 1),
                       "image": str(by_class[c].relative_to(run_dir))} for i, c in enumerate((label, 1, label))]
        queries.append({"test_index": test_index, "class": str(label),
                        "image": str(by_class[label].relative_to(run_dir)), "neighbours": neighbours})
    queries[1]["neighbours"][0]["class"] = "5"  # a miss: its nearest neighbour has another class
    queries[1]["neighbours"][1]["image"] = ""  # no picture saved for this one
    (run_dir / "neighbours.json").write_bytes(orjson.dumps({"distance": "cosine", "k": 3, "queries": queries}))
    shutil.rmtree(finished_copy / "runs" / "tiny-2" / "samples")
    (finished_copy / "runs" / "tiny-2" / "tables" / "samples.json").unlink()

    async def scenario():
        app = make_app(finished_copy)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: len(shown_ids(app)) == 2, what="the runs")
            app.runs_screen.table.move_to(app.runs_screen.table.row_for("tiny-1").rid)
            await pilot.press("i")
            await until(pilot, lambda: app.screen.query("NeighbourView"), what="the neighbour view")
            view = app.screen.query_one("NeighbourView")
            options = view.query_one("#queries")
            labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
            assert labels == ["  test 3  class 7", "x test 8  class 2"]
            await until_shown(pilot, app, "7 0.01", "1 0.02", "7 0.03")
            captions = [str(s.render()) for s in view.query(".neighbour Static")]
            assert captions[:3] == ["7 0.01", "1 0.02", "7 0.03"]
            await pilot.press("down")
            await until_shown(pilot, app, "5 0.01", "(no picture)")
            captions = [str(s.render()) for s in view.query(".neighbour Static")]
            assert captions[0] == "5 0.01" and "(no picture)" in captions
            await pilot.press("escape")
            app.runs_screen.table.move_to(app.runs_screen.table.row_for("tiny-2").rid)
            await pilot.press("i")
            await until(pilot, lambda: app.screen.query("#samples-note"), what="the note")
            assert "no samples recorded for this run" in str(app.screen.query_one("#samples-note").render())

    run(scenario())


# -- launching, watching, stopping and resuming real runs --------------------------------------------------------


@pytest.mark.slow
def test_launch_from_the_tui_and_watch_queued_to_completed(project_dir: Path):
    seen: dict[str, set[str]] = {}

    def record(message) -> None:
        if type(message).__name__ == "RunsChanged":
            for row in message.rows.values():
                seen.setdefault(row.id, set()).add(row.run.status)

    async def scenario():
        app = make_app(project_dir)
        async with app.run_test(size=(80, 24), notifications=True, message_hook=record) as pilot:
            await until_shown(pilot, app, "no runs yet")
            assert "no runs yet" in str(app.runs_screen.query_one("#runs-status").render())
            await pilot.press("2")
            await until(pilot, lambda: app.experiments_screen.table.row_count == 2, what="the experiments")
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the confirmation")
            body = str(app.screen.query_one("#dialog-body").render())
            assert body.startswith("2 runs") and "cpu" in body
            await pilot.press("y")
            await until(pilot, lambda: app.screen is app.runs_screen and len(shown_ids(app)) == 2, what="queued runs")
            assert any("tiny: 2 runs queued (tiny-1 .. tiny-2)" in n for n in notes(app))
            # one CPU slot: whichever run the scheduler takes first, the other waits behind it for the whole
            # of the first one's training, so the screen shows it queued (the first may start before any look)
            assert "queued" in statuses(app).values()
            await until(pilot, lambda: set(statuses(app).values()) == {"completed"}, timeout=240,
                        what="both runs completed on screen")
            rows = {r["id"]: r for r in table_text(app.runs_screen.table)}
            assert rows["tiny-1"]["epoch"] == "2/2" and rows["tiny-1"]["best"]
            await pilot.press("q")

    run(scenario())
    assert set(seen) == {"tiny-1", "tiny-2"} and all("completed" in s for s in seen.values())
    assert any("queued" in s for s in seen.values()) and any(s & {"starting", "running"} for s in seen.values())
    with Store(project_dir / "runs.db") as store:
        assert [r.status for r in store.runs()] == ["completed", "completed"]


@pytest.mark.slow
def test_stop_and_resume_from_the_tui_and_runs_outlive_it(project_dir: Path):
    async def launch_and_stop():
        app = make_app(project_dir)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: app.experiments_screen.table.row_count == 2, what="the experiments")
            await pilot.press("down", "enter")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the confirmation")
            await pilot.press("y")
            await until(pilot, lambda: statuses(app).get("long-1") == "running" and
                        table_text(app.runs_screen.table)[0].get("epoch", "") not in ("", "0/200"),
                        timeout=120, what="long-1 running its first epochs")
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen" and app.screen.charts,
                        what="the run detail with charts")
            detail = app.screen
            points = len(detail.charts["top1"].series["long-1"][0])
            await until(pilot, lambda: len(detail.charts["top1"].series["long-1"][0]) > points, timeout=60,
                        what="a new point on the live chart")
            await pilot.press("s")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the stop confirmation")
            await pilot.press("y")
            await until(pilot, lambda: "stopped" in str(detail.query_one("#run-header").render()), timeout=60,
                        what="stopped in the detail header")
            await pilot.press("r")
            await until(pilot, lambda: any(s in str(detail.query_one("#run-header").render())
                                           for s in ("starting", "running")), timeout=60,
                        what="resumed in the detail header")
            await until(pilot, lambda: "resuming at epoch" in "\n".join(detail.query_one("#run-log").lines),
                        timeout=90, what="the worker resuming from its checkpoint")
            await pilot.press("q")  # quitting stops nothing

    run(launch_and_stop())
    with Store(project_dir / "runs.db") as store:
        store.ingest()
        run_row = store.get("long-1")
        assert run_row.status == "running"
    from expt.core.scheduler import process_alive

    assert process_alive(run_row.pid)

    async def reopen_and_stop():
        app = make_app(project_dir)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await until(pilot, lambda: statuses(app).get("long-1") == "running", what="long-1 running again")
            await pilot.press("s", "y")
            await until(pilot, lambda: statuses(app).get("long-1") == "stopped", timeout=60, what="stopped")
            await pilot.press("q")

    run(reopen_and_stop())
    wait_for(lambda: not process_alive(run_row.pid), timeout=30, what="the worker to exit")
    log = (project_dir / "runs" / "long-1" / "log.txt").read_text()
    assert "resuming at epoch" in log


def test_expt_tui_refuses_a_bad_images_option_and_a_newer_runs_db(tmp_path: Path):
    folder = write_project(tmp_path / "proj")
    bad = expt("tui", "--images", "ascii", cwd=folder)
    assert bad.returncode == 2 and "--images 'ascii'" in bad.stderr and "Traceback" not in bad.stderr
    with Store(folder / "runs.db") as store:
        store.conn.execute("PRAGMA user_version = 99")
    newer = expt("tui", cwd=folder)
    assert newer.returncode == 1 and "schema version 99" in newer.stderr and "Traceback" not in newer.stderr
