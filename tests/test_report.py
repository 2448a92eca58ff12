"""``expt report``: the page a researcher pastes into a README, built from real runs of the real worker.

The few-shot study (``fewshot_project``: mode x shots x two seeds) gives the pivot cells, which are checked
against mean and CI computed here from the runs' summaries; one tiny scaling run and one tiny metric run give
the recipes' own tables (FixRes, per-class, drops) with the runs' numbers.
"""

from __future__ import annotations

import platform
import re
import shutil
from pathlib import Path

import orjson
import pytest

from conftest import CONTROL, MARKUP, digit_folders, expt, toml_string, write_project
from expt.analysis import Stat
from expt.formatting import mean_ci, number

PNG = b"\x89PNG\r\n\x1a\n"
DESCRIPTION = f"<b>bold</b> <script>x</script> *star* _under_ | pipe `tick` [link](http://x) {MARKUP} {CONTROL}"


def _copy(source: Path, target: Path) -> Path:
    from expt.store import Store

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("runs.db*"))
    with Store(target / "runs.db") as store:
        store.reindex(target / "runs")
    return target


@pytest.fixture(scope="module")
def fewshot_report(fewshot_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the few-shot study whose description is hostile user text, reported twice."""
    folder = tmp_path_factory.mktemp("report") / "proj"
    shutil.copytree(fewshot_project, folder, ignore=shutil.ignore_patterns("runs.db*"))
    for config in sorted((folder / "runs").glob("*/config.toml")):
        text = config.read_text()
        config.write_text(re.sub(r"(?m)^description = .*$", lambda _: f"description = {toml_string(DESCRIPTION)}",
                                 text, count=1))
    _copy_index(folder)
    first = expt("report", "fewshot", "--out", str(folder / "one"), cwd=folder)
    assert first.returncode == 0, first.stdout + first.stderr
    second = expt("report", "fewshot", "--out", str(folder / "two"), cwd=folder)
    assert second.returncode == 0, second.stdout + second.stderr
    runs = orjson.loads(expt("ls", "fewshot", "--json", cwd=folder).stdout)
    return folder, first, runs


def _copy_index(folder: Path) -> None:
    from expt.store import Store

    with Store(folder / "runs.db") as store:
        store.reindex(folder / "runs")


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


def _table_row(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_the_report_holds_the_pivot_the_runs_summaries_give(fewshot_report):
    folder, result, runs = fewshot_report
    readme = folder / "one" / "README.md"
    assert result.stdout.strip() == str(readme) and len(result.stdout.strip().splitlines()) == 1
    text = readme.read_text()
    assert text.startswith("# Report: fewshot\n")
    assert len(runs) == 8 and {r["status"] for r in runs} == {"completed"}
    table = _section(text, "### best\\_top1")
    assert "higher is better" in table and "mean ± 95% CI over 2 seeds" in table
    assert "| mode | shots=1 | shots=2 |" in table
    means = {}
    for mode in ("e2e", "fc"):
        cells = _table_row(table, mode)[1:]
        for shots, cell in zip((1, 2), cells):
            values = [r["summary"]["best_top1"] for r in runs
                      if r["params"]["mode"] == mode and r["params"]["shots"] == shots]
            stat = Stat.of(values)
            assert len(values) == 2 and cell.strip("*") == mean_ci(stat, 2).replace("*", "\\*")
            means[mode, shots] = (stat.mean, cell.startswith("**"))
    for shots in (1, 2):  # the best cell of each column in bold
        best = max(("e2e", "fc"), key=lambda m: means[m, shots][0])
        assert means[best, shots][1] and not means[{"e2e": "fc", "fc": "e2e"}[best], shots][1]
    ran = _section(text, "## What ran")
    assert "| model | test\\_efficientnet |" in ran and "| epochs | 2 |" in ran and "| lr | 0.05 |" in ran
    assert "- mode: e2e, fc" in ran and "- shots: 1, 2" in ran and "- seed: 0, 1" in ran
    assert "| mode |" not in ran.split("Swept:")[0]  # swept keys are not among the fixed ones
    hosts = {r["host"] for r in runs}
    assert all(f"| {h} |" in ran for h in hosts) and f"| {platform.python_version()} |" in ran
    assert "- runs: 8 completed" in text


def test_the_figures_are_real_pngs_and_rerunning_gives_the_same_bytes(fewshot_report):
    from PIL import Image

    folder, _, _ = fewshot_report
    one, two = folder / "one", folder / "two"
    text = (one / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "curves-top1.png" in links and "samples-fewshot.png" in links
    for name in links:
        data = (one / name).read_bytes()
        assert data.startswith(PNG), name
        with Image.open(one / name) as image:
            assert image.width >= 100 and image.height >= 100, (name, image.size)
        assert (two / name).read_bytes() == data, name
    with Image.open(one / "curves-top1.png") as image:
        assert image.size == (700, 420)
    assert "shaded: their minimum to maximum" in text
    generated = re.compile(r"^Generated by expt .* on \d{4}-\d\d-\d\d \d\d:\d\d UTC from runs\.db$", re.M)
    assert len(generated.findall(text)) == 1
    assert generated.sub("", text) == generated.sub("", (two / "README.md").read_text())


def test_user_text_shows_as_written(fewshot_report):
    folder, _, _ = fewshot_report
    text = (folder / "one" / "README.md").read_text()
    description = next(line for line in text.splitlines() if "bold" in line)
    assert "<" not in description and ">" not in description
    assert "&lt;b&gt;bold&lt;/b&gt; &lt;script&gt;" in description
    assert "\\*star\\* \\_under\\_ \\| pipe \\`tick\\` \\[link\\]\\(http://x\\)" in description
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e\u200f]", text)
    assert "\\\\x1b\\[31mred" in description and "\\\\x00" in description  # control codes shown escaped


def test_an_unknown_experiment_is_one_line_and_exit_2(fewshot_report):
    folder, _, _ = fewshot_report
    result = expt("report", "nope", cwd=folder)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: no runs of experiment 'nope' (experiments with runs: fewshot)"]


def test_where_and_tag_narrow_the_report(fewshot_project: Path, tmp_path: Path):
    folder = _copy(fewshot_project, tmp_path / "proj")
    runs = orjson.loads(expt("ls", "fewshot", "--json", cwd=folder).stdout)
    two_shot = sorted(r["id"] for r in runs if r["params"]["shots"] == 2)
    result = expt("report", "fewshot", "--where", "shots = 2", "--out", "two", cwd=folder)
    assert result.returncode == 0, result.stderr
    text = (folder / "two" / "README.md").read_text()
    assert f"- runs: {len(two_shot)} completed" in text

    assert expt("tag", two_shot[0], "paper", cwd=folder).returncode == 0
    tagged = expt("report", "fewshot", "--tag", "paper", "--out", "tagged", cwd=folder)
    assert tagged.returncode == 0, tagged.stderr
    assert "- runs: 1 completed" in (folder / "tagged" / "README.md").read_text()

    none = expt("report", "fewshot", "--tag", "nothing", cwd=folder)
    assert none.returncode == 2 and none.stdout == ""
    assert none.stderr.strip() == "error: no runs of experiment 'fewshot' match --where/--tag"
    assert not (folder / "reports").exists()


SCALING = """\
recipe = "scaling"
stages = [
    {type = "conv", kernel = 3, channels = 8, layers = 1, stride = 2},
    {type = "mbconv", kernel = 3, channels = 8, layers = 1, stride = 2, expand = 1},
    {type = "conv", kernel = 1, channels = 16, layers = 1, stride = 1},
]
train_res = 16
k_image_test = 18
hflip = 0.0
batch_size = 64
lr = 0.01
epochs = 1
fixres = true
fixres_epochs = 1
fixres_lr = 0.002
"""
METRIC = """\
recipe = "metric"
dataset = "imagefolder"
data_dir = "digits"
test_fraction = 0.25
model = "test_resnet"
pretrained = false
img_size = 32
epochs = 1
batch_size = 16
embedding_dim = 32
unseen_classes = 2
"""


def test_the_recipes_tables_appear_with_the_runs_numbers(tmp_path: Path):
    folder = write_project(tmp_path / "proj", f"[experiments.scale]\n{SCALING}\n[experiments.dml]\n{METRIC}")
    digit_folders(folder / "digits")
    for name in ("scale", "dml"):
        result = expt("run", name, cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
    result = expt("report", "scale", "dml", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    readme = folder / "reports" / "scale+dml" / "README.md"
    assert result.stdout.strip() == str(readme)
    text = readme.read_text()
    runs = {r["experiment"]: r for r in orjson.loads(expt("ls", "--json", cwd=folder).stdout)}
    assert {r["status"] for r in runs.values()} == {"completed"}

    def rows(run_id: str, table: str) -> list[dict]:
        return orjson.loads((folder / "runs" / run_id / "tables" / f"{table}.json").read_bytes())["rows"]

    tables = _section(text, "## Recipe tables")
    assert "**scale-1: fixres**" in tables and "**scale-1: stages**" in tables
    for row in rows("scale-1", "fixres"):
        assert _table_row(tables, row["model"]) == [row["model"], number(row["resolution"]),
                                                    number(row["test_loss"]), number(row["test_acc"])]
    for table in ("all_classes_metrics", "comparison_unseen_classes_metrics", "comparison_seen_classes_metrics"):
        assert f"**dml-1: {table.replace('_', chr(92) + '_')}**" in tables, table
    per_class = _section(tables, "**dml-1: all\\_classes\\_metrics**")
    for row in rows("dml-1", "all_classes_metrics"):
        assert _table_row(per_class, row["class"]) == [row["class"], *(number(row[k]) for k in (
            "test_samples", "train_samples", "precision_at_1"))]
    drops = tables[tables.index("**dml-1: comparison\\_unseen\\_classes\\_metrics**"):]
    for row in rows("dml-1", "comparison_unseen_classes_metrics"):
        assert _table_row(drops, row["class"])[-1] == number(row["drop"])
    results = _section(text, "## Results")
    summary = runs["dml"]["summary"]
    assert "### dml: results" in results and "### scale: results" in results
    assert number(summary["precision_at_1"]) in results
    assert number(summary["precision_drop_unseen_classes"]) in results
    assert number(runs["scale"]["summary"]["acc_after"]) in results
    assert (readme.parent / "curves-top1.png").read_bytes().startswith(PNG)
