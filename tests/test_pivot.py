"""Pivot tables (`expt table`, the TUI's table of an experiment) over real runs of the real worker: every cell's
mean, 95% CI and n checked against the runs' own summaries, in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
import shutil
import statistics
import sys
from pathlib import Path

import orjson
import pytest

from conftest import CONTROL, MARKUP, expt, screen_text, toml_string, until_shown, write_project
from expt.formatting import number, spread

T975_1 = 12.706  # Student's t, two-sided 95%, one degree of freedom (two seeds per cell)


def expected_cells(project: Path, metric: str = "best_top1") -> dict[tuple[str, int], dict]:
    """(mode, shots) -> mean, ci95, n, runs: computed here from `expt ls --json`'s summaries."""
    result = expt("ls", "fewshot", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    cells: dict[tuple[str, int], list] = {}
    for run in orjson.loads(result.stdout):
        assert run["status"] == "completed"
        cells.setdefault((run["params"]["mode"], run["params"]["shots"]), []).append(run)
    out = {}
    for key, runs in cells.items():
        values = [r["summary"][metric] for r in runs]
        mean = statistics.fmean(values)
        ci = T975_1 * statistics.stdev(values) / math.sqrt(len(values))
        out[key] = {"mean": mean, "ci95": ci, "n": len(values), "runs": sorted(r["id"] for r in runs),
                    "text": f"{number(mean)} ± {spread(ci)} (n={len(values)})"}
    assert len(out) == 4 and all(c["n"] == 2 for c in out.values())
    return out


def best_modes(cells: dict) -> dict[int, str]:
    """shots -> the mode whose mean is highest (top-1: larger is better)."""
    return {shots: max(("e2e", "fc"), key=lambda m: cells[(m, shots)]["mean"]) for shots in (1, 2)}


@pytest.fixture(scope="module")
def expected(fewshot_project: Path) -> dict:
    return expected_cells(fewshot_project)


def test_expt_table_answers_the_few_shot_question_with_mean_ci_and_n(fewshot_project: Path, expected: dict):
    result = expt("table", "fewshot", "--rows", "mode", "--cols", "shots", "--json", cwd=fewshot_project)
    assert result.returncode == 0, result.stderr
    (table,) = orjson.loads(result.stdout)["tables"]
    assert (table["metric"], table["goal"], table["rows"], table["cols"]) == ("best_top1", "max", ["mode"], ["shots"])
    assert table["row_values"] == [["e2e"], ["fc"]] and table["col_values"] == [[1], [2]]
    best = best_modes(expected)
    for cell in table["cells"]:
        want = expected[(cell["row"]["mode"], cell["col"]["shots"])]
        assert cell["mean"] == pytest.approx(want["mean"], rel=1e-12)
        assert cell["ci95"] == pytest.approx(want["ci95"], rel=1e-3)
        assert (cell["n"], sorted(cell["runs"]), cell["pending"]) == (2, want["runs"], 0)
        assert cell["best"] == (best[cell["col"]["shots"]] == cell["row"]["mode"])

    shown = expt("table", "fewshot", "--rows", "mode", "--cols", "shots", cwd=fewshot_project, columns=120)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("best_top1 (mean ± 95% CI over 2 seeds)") and "* best" in lines[0]
    assert lines[1].split() == ["mode", "shots=1", "shots=2"]
    for line in lines[2:4]:
        mode = line.split()[0]
        for shots in (1, 2):
            mark = "*" if best[shots] == mode else ""
            assert f"{mark}{expected[(mode, shots)]['text']}" in line, (line, expected[(mode, shots)])
            if not mark:
                assert f"*{expected[(mode, shots)]['text']}" not in line


def _md_cells(text: str) -> dict[tuple[str, str], str]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    return {(r.split("|")[1].strip(), h): c.strip() for r in rows[1:] for h, c in zip(head[1:], r.strip("|").split("|")[1:])}


def test_markdown_latex_and_csv_read_back_to_the_same_cells(fewshot_project: Path, expected: dict, cli, monkeypatch):
    monkeypatch.chdir(fewshot_project)
    best = best_modes(expected)
    md = cli("table", "fewshot", "--rows", "mode", "--cols", "shots", "-F", "md")
    assert md.exit_code == 0, md.output
    for (mode, header), text in _md_cells(md.stdout).items():
        want = expected[(mode, int(header.removeprefix("shots=")))]["text"]
        assert text == (f"**{want}**" if best[int(header[-1])] == mode else want)

    latex = cli("table", "fewshot", "--rows", "mode", "--cols", "shots", "-F", "latex").stdout
    assert r"\toprule" in latex and r"\midrule" in latex and r"\bottomrule" in latex
    body = {line.split(" & ")[0]: line.removesuffix(r" \\").split(" & ")[1:] for line in latex.splitlines()
            if line.startswith(("e2e &", "fc &"))}
    for mode, cells in body.items():
        for shots, cell in zip((1, 2), cells):
            want = expected[(mode, shots)]["text"].replace("±", r"$\pm$")
            assert cell == (rf"\textbf{{{want}}}" if best[shots] == mode else want)

    rows = list(csv.DictReader(io.StringIO(cli("table", "fewshot", "--rows", "mode", "--cols", "shots",
                                               "-F", "csv").stdout)))
    assert len(rows) == 4
    for row in rows:
        want = expected[(row["mode"], int(row["shots"]))]
        assert float(row["mean"]) == pytest.approx(want["mean"], rel=1e-12)
        assert float(row["ci95"]) == pytest.approx(want["ci95"], rel=1e-3)
        assert int(row["n"]) == 2 and sorted(row["runs"].split()) == want["runs"]
        assert row["best"] == str(int(best[int(row["shots"])] == row["mode"]))

    export = cli("export", "fewshot", "-F", "latex")
    assert export.exit_code == 0 and export.stdout.count("\\\\\n") == 9  # the header and eight runs
    assert r"\begin{tabular}" in export.stdout and r"summary.best\_top1" in export.stdout


def test_default_axes_several_metrics_several_row_keys_and_a_bad_key(fewshot_project: Path, cli, monkeypatch):
    monkeypatch.chdir(fewshot_project)
    (table,) = cli.json("table", "fewshot")["tables"]  # the swept keys, the seed left out
    assert (table["rows"], table["cols"], table["metric"]) == (["mode"], ["shots"], "best_top1")

    tables = cli.json("table", "fewshot", "--metric", "best_top1", "--metric", "best_epoch")["tables"]
    assert [t["metric"] for t in tables] == ["best_top1", "best_epoch"]
    assert tables[1]["goal"] is None and not any(c["best"] for c in tables[1]["cells"])
    shown = cli("table", "fewshot", "-m", "best_top1", "-m", "best_epoch").stdout
    assert "best_top1 (mean ± 95% CI over 2 seeds)" in shown and "best_epoch (mean ± 95% CI" in shown

    (long,) = cli.json("table", "fewshot", "--rows", "mode,shots")["tables"]
    assert long["rows"] == ["mode", "shots"] and long["cols"] == []
    assert long["row_values"] == [["e2e", 1], ["e2e", 2], ["fc", 1], ["fc", 2]]
    assert sum(c["best"] for c in long["cells"]) == 1

    (by_seed,) = cli.json("table", "fewshot", "--rows", "mode", "--cols", "seed")["tables"]
    assert all(c["n"] == 2 for c in by_seed["cells"])
    assert by_seed["mixed"] == ["shots"]  # two shots inside each cell: said under the table
    assert "mixed inside a cell: shots" in cli("table", "fewshot", "--rows", "mode", "--cols", "seed").stdout

    bad = expt("table", "fewshot", "--rows", "mdoe", cwd=fewshot_project)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "--rows 'mdoe': no run has that key; did you mean 'mode'?" in bad.stderr
    bad_metric = cli("table", "fewshot", "--metric", "best_top")
    assert bad_metric.exit_code == 2 and "did you mean 'best_top1'?" in bad_metric.output
    assert cli("table", "fewshot", "-F", "xls").exit_code == 2


def test_where_and_tag_choose_the_runs_in_the_table(fewshot_project: Path, expected: dict, cli, monkeypatch,
                                                    tmp_path: Path):
    folder = tmp_path / "proj"
    shutil.copytree(fewshot_project, folder, ignore=shutil.ignore_patterns("runs.db*"))
    monkeypatch.chdir(folder)
    assert cli("reindex").exit_code == 0
    (one_shot,) = cli.json("table", "fewshot", "--rows", "mode", "--cols", "shots", "--where", "shots = 1")["tables"]
    assert one_shot["col_values"] == [[1]]
    assert {c["row"]["mode"]: sorted(c["runs"]) for c in one_shot["cells"]} == {
        mode: expected[(mode, 1)]["runs"] for mode in ("e2e", "fc")}

    fc_runs = expected[("fc", 1)]["runs"] + expected[("fc", 2)]["runs"]
    assert cli("tag", *fc_runs, "keep").exit_code == 0
    (kept,) = cli.json("table", "fewshot", "--rows", "mode", "--cols", "shots", "--tag", "keep")["tables"]
    assert kept["row_values"] == [["fc"]]
    assert [c["mean"] for c in kept["cells"]] == pytest.approx([expected[("fc", s)]["mean"] for s in (1, 2)])

    none = expt("table", "fewshot", "--where", "shots > 99", cwd=folder)
    assert none.returncode == 2 and none.stderr.strip() == "error: fewshot: no runs match --where/--tag"


UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_user_text_in_params_is_inert_in_every_format(tmp_path: Path):
    code = ("import json, os\nwith open(os.environ['EXPT_TRACK'], 'a') as f:\n"
            "    f.write(json.dumps({'kind': 'summary', 'values': {'acc': 0.5}}) + '\\n')\n")
    folder = write_project(tmp_path / "proj", f'''\
[experiments.h]
recipe = "command"
command = ["{sys.executable}", "-c", {json.dumps(code.replace("{", "{{").replace("}", "}}"))}]
[experiments.h.sweep]
label = [{toml_string(MARKUP)}, {toml_string(CONTROL.replace(chr(0), ""))}, "<i>html</i> & co"]
''')
    ran = expt("run", "h", cwd=folder)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for fmt in ("rich", "md", "latex", "csv", "json"):
        out = expt("table", "h", "-F", fmt, cwd=folder, columns=300)
        assert out.returncode == 0, out.stderr
        assert not UNSAFE.search(out.stdout.replace("\n", "")), (fmt, out.stdout)
    rich = expt("table", "h", cwd=folder, columns=300).stdout
    assert MARKUP in rich and "\\x1b[31mred" in rich and "0.5" in rich
    markdown = expt("table", "h", "-F", "md", cwd=folder).stdout
    assert "&lt;i&gt;html&lt;/i&gt; &amp; co" in markdown and "<i>" not in markdown
    latex = expt("table", "h", "-F", "latex", cwd=folder).stdout
    assert r"\textbackslash{}x1b[31mred" in latex and r"[link=file:///etc/passwd]x[/link]" in latex


# -- the TUI ------------------------------------------------------------------------------------------------

def test_the_tui_table_opens_with_t_and_fills_in_as_a_run_completes(fewshot_project: Path, expected: dict,
                                                                    tmp_path: Path):
    from expt.project import Project
    from expt.store import Store
    from expt.tui.app import create_app

    folder = tmp_path / "copy"
    shutil.copytree(fewshot_project, folder, ignore=shutil.ignore_patterns("runs.db*"))
    with Store(folder / "runs.db") as store:
        store.reindex(folder / "runs")
    best = best_modes(expected)
    cell = ("e2e", 1)

    async def scenario():
        app = create_app(Project(folder / "experiments.toml"), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("2")
            await until_shown(pilot, app, "fewshot")
            await pilot.press("t")
            texts = [("*" if best[s] == m else "") + expected[(m, s)]["text"] for m, s in expected]
            await until_shown(pilot, app, "best_top1 (mean ± 95% CI over 2 seeds)", "shots=1", *texts)
            await pilot.press("x")  # rows and columns swapped
            await until_shown(pilot, app, "shots  mode=e2e")
            await pilot.press("x")

            rerun = await asyncio.to_thread(expt, "rerun", "fewshot-1", "--detach", cwd=folder)  # a third run in the (e2e, 1) cell
            assert rerun.returncode == 0, rerun.stderr
            await until_shown(pilot, app, "n=2) …", "not completed yet")
            with Store(folder / "runs.db") as store:
                await until_shown(pilot, app, "(n=3)", timeout=120)
                store.ingest()
                values = [r.summary["best_top1"] for r in store.runs("experiment = 'fewshot'")
                          if (r.params["mode"], r.params["shots"]) == cell]
            assert len(values) == 3
            mean, ci = statistics.fmean(values), 4.303 * statistics.stdev(values) / math.sqrt(3)
            await until_shown(pilot, app, f"{number(mean)} ± {spread(ci)} (n=3)")
            assert "not completed yet" not in screen_text(app)
            await pilot.press("escape")
            await until_shown(pilot, app, "experiment")
            assert type(app.screen).__name__ == "ExperimentsScreen"

            await pilot.press("ctrl+p")  # the same table from the command palette
            await pilot.press(*"Table of experiment fewshot")
            await until_shown(pilot, app, "Table of experiment fewshot")
            await pilot.press("enter")
            await until_shown(pilot, app, "table fewshot", f"{number(mean)} ± {spread(ci)} (n=3)")
            assert type(app.screen).__name__ == "PivotScreen"
            await pilot.press("question_mark")
            await until_shown(pilot, app, "Keys: Pivot", "Swap rows/cols", "95% confidence interval")

    asyncio.run(scenario())
