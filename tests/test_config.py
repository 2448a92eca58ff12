"""experiments.toml validation: every mistake is one clear line, exit status 2, nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from expt.config import parse_config
from expt.errors import ConfigError
from expt.store import Store

HEAD = '[experiments.demo]\nrecipe = "finetune"\nmodel = "test_efficientnet"\npretrained = false\n'

# (name, file text, expected text in the message, expected line number or None)
BAD_FILES = [
    ("syntax", "[experiments.demo\nrecipe = 'finetune'\n", "TOML syntax error", 1),
    ("duplicate-key", HEAD + "epochs = 1\nepochs = 2\n", "TOML syntax error", 6),
    ("unterminated-string", HEAD + 'mode = "e2e\n', "TOML syntax error", 5),
    ("misspelt-key", HEAD + "lrr = 0.1\n", "demo.lrr: unknown parameter (did you mean 'lr'?)", 5),
    ("unknown-key", HEAD + "colour = 'red'\n", "demo.colour: unknown parameter", 5),
    ("unknown-recipe", '[experiments.demo]\nrecipe = "fintune"\n', "unknown recipe 'fintune' (did you mean 'finetune'?)", 2),
    ("missing-recipe", "[experiments.demo]\nepochs = 3\n", "missing 'recipe'", 1),
    ("wrong-type-int", HEAD + 'epochs = "ten"\n', "demo.epochs: expected int, got str 'ten'", 5),
    ("wrong-type-bool", HEAD.replace("pretrained = false", "pretrained = 1"), "demo.pretrained: expected bool, got int", 4),
    ("wrong-type-float", HEAD + "lr = true\n", "demo.lr: expected float, got bool", 5),
    ("below-minimum", HEAD + "epochs = -1\n", "demo.epochs: -1 is below the minimum 0", 5),
    ("above-maximum", HEAD + "smoothing = 1.5\n", "demo.smoothing: 1.5 is above the maximum 1", 5),
    ("bad-choice", HEAD + 'mode = "e2f"\n', "demo.mode: 'e2f' is not one of e2e, fc, cbn, bn, knn (did you mean 'e2e'?)", 5),
    ("unknown-model", HEAD.replace("test_efficientnet", "resnet181"), "unknown timm model 'resnet181' (did you mean", 3),
    ("bad-dataset", HEAD + 'dataset = "mnist"\n', "demo.dataset: 'mnist' is not one of digits", 5),
    ("list-item-type", HEAD + 'scale = [0.1, "a"]\n', "demo.scale: expected list[float], got an item str", 5),
    ("sweep-not-list", HEAD + "[experiments.demo.sweep]\nlr = 0.1\n", "demo.sweep.lr: a sweep needs a non-empty list", 6),
    ("sweep-empty", HEAD + "[experiments.demo.sweep]\nlr = []\n", "demo.sweep.lr: a sweep needs a non-empty list", 6),
    ("sweep-misspelt", HEAD + "[experiments.demo.sweep]\nmoed = ['e2e']\n", "demo.sweep.moed: unknown parameter (did you mean 'mode'?)", 6),
    ("sweep-bad-value", HEAD + "[experiments.demo.sweep]\nmode = ['e2e', 'xx']\n", "demo.sweep.mode: 'xx' is not one of", 6),
    ("sweep-not-table", HEAD + "sweep = [1, 2]\n", "demo.sweep: must be a table of lists", 5),
    ("repeat-zero", HEAD + "repeat = 0\n", "demo.repeat: expected an int from 1 to 1000, got 0", 5),
    ("repeat-and-seed-sweep", HEAD + "repeat = 3\n[experiments.demo.sweep]\nseed = [1, 2]\n", "use either 'repeat' or a sweep over 'seed'", 5),
    ("cases-not-tables", HEAD + "cases = [1, 2]\n", "demo.cases: must be a list of tables", 5),
    ("cases-unknown-key", HEAD + "cases = [{lrr = 0.1}]\n", "demo.cases.lrr: unknown parameter (did you mean 'lr'?)", 5),
    ("top-level-typo", "[experiment.demo]\nrecipe = 'finetune'\n", "experiment: unknown top-level key (did you mean 'experiments'?)", 1),
    ("no-experiments", "[defaults]\nepochs = 3\n", "no [experiments.NAME] table", None),
    ("defaults-typo", "[defaults]\nepcohs = 3\n" + HEAD, "defaults.epcohs: not a parameter of any recipe (did you mean 'epochs'?)", 2),
    ("bad-name", '[experiments."my exp"]\nrecipe = "finetune"\n', "experiment names use letters, digits", 1),
    ("name-like-run-id", '[experiments.demo-2]\nrecipe = "finetune"\n', "not ending in '-NUMBER'", 1),
    ("experiment-not-table", "[experiments]\ndemo = 3\n", "demo: must be a table", 2),
    ("description-type", HEAD + "description = 5\n", "demo.description: expected str", 5),
    ("launcher-typo", HEAD + "[launcher]\nbackned = 'local'\n", "launcher.backned: unknown launcher setting (did you mean 'backend'?)", 6),
    ("launcher-choice", HEAD + "[launcher]\nbackend = 'pbs'\n", "launcher.backend: 'pbs' is not one of local, slurm", 6),
    ("defaults-wrong-type", "[defaults]\nepochs = 'x'\n" + HEAD, "demo.epochs: expected int, got str", None),
]


@pytest.mark.parametrize("name,text,expected,line", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_file_is_one_line_exit_2_nothing_written(name, text, expected, line, project_dir: Path, cli):
    (project_dir / "experiments.toml").write_text(text)
    Store(project_dir / "runs.db").close()
    before = _snapshot(project_dir)
    result = cli("run", "demo")
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output
    location = f"experiments.toml:{line}:" if line else "experiments.toml"
    assert any(l.startswith(f"error: {location}") for l in result.stderr.splitlines()), result.stderr
    assert _snapshot(project_dir) == before


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_several_problems_are_reported_together():
    text = HEAD + "lrr = 0.1\nepochs = 'x'\n[experiments.other]\nrecipe = 'nope'\n"
    with pytest.raises(ConfigError) as error:
        parse_config(text, Path("experiments.toml"))
    problems = error.value.problems
    assert len(problems) == 3
    assert [p.split(":")[1] for p in problems] == ["5", "6", "8"]


def test_unknown_experiment_lists_the_known_ones(project_dir: Path, cli):
    result = cli("run", "tinny")
    assert result.exit_code == 2
    assert "no experiment 'tinny' (did you mean 'tiny'?); experiments: tiny, long" in result.stderr


def test_missing_data_folder_is_caught_before_anything_is_queued(project_dir: Path, cli):
    (project_dir / "experiments.toml").write_text(HEAD + 'dataset = "imagefolder"\ndata_dir = "no/such/dir"\n')
    result = cli("run", "demo")
    assert result.exit_code == 2
    assert "demo: data_dir 'no/such/dir': no such folder (dataset 'imagefolder'; expected class sub-folders" in result.stderr
    assert not (project_dir / "runs").exists()


def test_missing_file(tmp_path: Path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("-f", "nothere.toml", "run", "demo")
    assert result.exit_code == 2
    assert "nothere.toml: no such file" in result.stderr


def test_sweep_cases_and_repeat_expand_in_order():
    text = HEAD + "seed = 10\nrepeat = 2\ncases = [{shots = 1}, {shots = 3}]\n[experiments.demo.sweep]\nmode = ['e2e', 'fc']\n"
    experiment = parse_config(text, Path("experiments.toml")).experiments["demo"]
    points = experiment.expand().points
    assert len(points) == 8
    assert [p.varying for p in points[:3]] == [
        {"shots": 1, "mode": "e2e", "seed": 10}, {"shots": 1, "mode": "e2e", "seed": 11},
        {"shots": 1, "mode": "fc", "seed": 10}]
    assert points[-1].params["shots"] == 3 and points[-1].params["mode"] == "fc"
    assert all(p.params["model"] == "test_efficientnet" for p in points)


def test_defaults_fill_in_and_ints_become_floats():
    text = "[defaults]\nepochs = 4\nlr = 1\n" + HEAD
    experiment = parse_config(text, Path("experiments.toml")).experiments["demo"]
    assert experiment.params["epochs"] == 4
    assert experiment.params["lr"] == 1.0 and isinstance(experiment.params["lr"], float)
    assert experiment.params["batch_size"] == 16  # the recipe's own default


def test_shipped_experiments_file_is_valid():
    config = parse_config(Path("experiments.toml").read_text() if Path("experiments.toml").exists() else
                          (Path(__file__).parents[1] / "experiments.toml").read_text(), Path("experiments.toml"))
    assert "demo" in config.experiments
    assert config.experiments["demo"].size == 2
