"""The finetune recipe: conditional batch norm, what each mode trains, the seed's parameter table,
few-shot sampling, the saved samples, and timm train.py interop."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from PIL import Image

from conftest import expt, write_project

# -- conditional batch norm -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "test_efficientnet"])
def test_conditional_batchnorm_changes_nothing_at_initialisation(name):
    """resnet18 has plain BatchNorm2d; timm's EfficientNets have BatchNormAct2d (BN + activation)."""
    import timm

    from expt.core import models

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7)
    norm_types = {type(m).__name__ for m in models.norm_layers(model)}
    assert ("BatchNormAct2d" in norm_types) == (name == "test_efficientnet")
    x = torch.randn(4, 3, 48, 48)
    for train in (False, True):
        reference = timm.create_model(name, pretrained=False, num_classes=7)
        reference.load_state_dict(model.state_dict())
        wrapped = timm.create_model(name, pretrained=False, num_classes=7)
        wrapped.load_state_dict(model.state_dict())
        deltas = models.add_conditional_batchnorm(wrapped)
        assert deltas and all(not d.detach().any() for d in deltas)
        reference.train(train)
        wrapped.train(train)
        with torch.no_grad():
            assert torch.equal(reference(x), wrapped(x)), f"{name}, train={train}"


def test_conditional_batchnorm_deltas_move_the_output_and_only_they_train():
    import timm

    from expt.core import models
    from expt.core.recipes.finetune import _trainable_parameters

    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    models.set_trainable(model, _trainable_parameters(model, "cbn"))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    deltas = [m.parametrizations.weight[0].delta for m in models.norm_layers(model)]
    assert any(d.detach().any() for d in deltas)
    after = model.state_dict()
    for key, value in before.items():
        frozen = "classifier" not in key and "running" not in key and "num_batches" not in key
        if frozen and key in after:
            assert torch.equal(after[key], value), key


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_without_weight_decay_cbn_trains_as_bn_does_and_with_it_they_part(opt):
    """A zero-initialised delta added to a frozen weight gets the weight's gradient, so with no weight decay
    gamma + delta follows the path gamma takes in bn mode (the shipped study's cbn and bn rows agree); weight
    decay pulls the delta towards the pretrained gamma and gamma towards 0, and the two modes part."""
    import timm

    from expt.core import models, training
    from expt.core.recipes.finetune import _trainable_parameters

    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3

    def effective_weights(mode: str, weight_decay: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
        models.set_trainable(model, _trainable_parameters(model, mode))
        optimizer = training.create_optimizer([q for q in model.parameters() if q.requires_grad],
                                              {"opt": opt, "lr": 0.05, "weight_decay": weight_decay,
                                               "momentum": 0.9})
        model.train()
        models.set_norm_mode(model, batch_statistics=False)  # bn_train = false, the default
        for _ in range(10):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return torch.cat([torch.cat([m.weight.detach().flatten(), m.bias.detach().flatten()])
                          for m in models.norm_layers(model)])

    bn, cbn = effective_weights("bn", 0.0), effective_weights("cbn", 0.0)
    assert not torch.allclose(bn, effective_weights("fc", 0.0))  # they trained
    assert torch.allclose(bn, cbn, atol=1e-4)
    assert (effective_weights("bn", 0.5) - effective_weights("cbn", 0.5)).abs().max() > 1e-3


# -- what each mode trains, counted independently ------------------------------------------------------------

# resnet18's batch-norm channels: stem 64; layer1 2x2x64; layer2 2x2x128 + 128 (downsample); layer3 4x256 + 256;
# layer4 4x512 + 512; each has a weight and a bias.
RESNET18_BN = 2 * (64 + 4 * 64 + 4 * 128 + 128 + 4 * 256 + 256 + 4 * 512 + 512)
RESNET18_FC_10 = 512 * 10 + 10
RESNET18_TOTAL_1000 = 11_689_512
RESNET18_TOTAL_10 = RESNET18_TOTAL_1000 - (512 * 1000 + 1000) + RESNET18_FC_10


@pytest.mark.parametrize("mode,trainable,extra", [
    ("e2e", RESNET18_TOTAL_10, 0),
    ("fc", RESNET18_FC_10, 0),
    ("bn", RESNET18_BN + RESNET18_FC_10, 0),
    ("cbn", RESNET18_BN + RESNET18_FC_10, RESNET18_BN),
    ("knn", 0, 0),
])
def test_trainable_parameters_per_mode(mode, trainable, extra):
    import timm

    from expt.core import models
    from expt.core.recipes.finetune import _trainable_parameters

    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    models.set_trainable(model, _trainable_parameters(model, mode))
    total, n_trainable = models.count_parameters(model)
    assert RESNET18_BN == 9_600
    assert (total, n_trainable) == (RESNET18_TOTAL_10 + extra, trainable)


def test_the_seeds_parameter_table(cli):
    from expt.core.models import parameter_counts

    resnet18 = parameter_counts("resnet18")
    assert (resnet18["total"], resnet18["cbn_deltas"]) == (11_689_512, 9_600)
    resnet50 = parameter_counts("resnet50", 37)
    assert (resnet50["total"], resnet50["cbn_deltas"]) == (23_583_845, 53_120)
    result = cli("params", "resnet50", "--classes", "37")
    assert result.exit_code == 0 and "23,583,845" in result.stdout and "53,120" in result.stdout
    bad = cli("params", "resnet181")
    assert bad.exit_code == 2 and "did you mean 'resnet18'" in bad.stderr


# -- few-shot sampling --------------------------------------------------------------------------------------


def test_shots_are_reproducible_per_seed_and_disjoint_from_the_test_split():
    from expt.core import data

    splits = data.load_splits({"dataset": "digits", "test_fraction": 0.2, "split_seed": 0})
    first = data.few_shot(splits.train, 3, seed=1)
    assert np.array_equal(first, data.few_shot(splits.train, 3, seed=1))
    assert not np.array_equal(first, data.few_shot(splits.train, 3, seed=2))
    assert np.bincount(splits.train.labels[first]).tolist() == [3] * 10
    chosen = {splits.train.names[i] for i in first}
    assert not chosen & set(splits.test.names)
    assert 350 <= len(splits.test) <= 370 and len(splits.train) + len(splits.test) == 1797


# -- runs through the real worker ------------------------------------------------------------------------------

MODES_TOML = """\
[experiments.modes]
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
shots = 3
img_size = 32
epochs = 2
batch_size = 10
lr = 0.05

[experiments.modes.sweep]
mode = ["cbn", "bn", "knn"]
"""


@pytest.mark.slow
def test_cbn_bn_and_knn_runs_record_the_summary_and_samples(tmp_path: Path):
    folder = write_project(tmp_path / "proj", MODES_TOML)
    result = expt("run", "modes", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r["params"]["mode"]: r for r in orjson.loads(expt("ls", "--json", cwd=folder).stdout)}
    assert {r["status"] for r in runs.values()} == {"completed"}
    for mode in ("cbn", "bn"):
        summary = runs[mode]["summary"]
        for key in ("total_params", "trainable_params", "best_top1", "best_epoch", "final_top1", "top5",
                    "train_loss", "eval_loss"):
            assert key in summary, (mode, key)
        assert 0 < summary["trainable_params"] < summary["total_params"]
    assert runs["cbn"]["summary"]["total_params"] > runs["bn"]["summary"]["total_params"]
    knn = runs["knn"]["summary"]
    assert knn["trainable_params"] == 0 and 0 <= knn["best_top1"] <= 100 and "nn1_top1" in knn

    listing = expt("samples", runs["cbn"]["id"], "--json", cwd=folder)
    samples = orjson.loads(listing.stdout)
    assert len(samples) == 30 and sorted({s["class"] for s in samples}) == [str(d) for d in range(10)]
    assert all(Path(s["file"]).is_file() for s in samples)
    sheet = tmp_path / "sheet.png"
    assert expt("samples", runs["cbn"]["id"], "--out", str(sheet), cwd=folder).returncode == 0
    with Image.open(sheet) as image:
        assert image.width > 3 * 64 and image.height > 10 * 64
        assert len(set(image.convert("L").getdata())) > 10  # real pictures, not a blank page
    no_samples = expt("samples", "nope-1", cwd=folder)
    assert no_samples.returncode == 2 and "no run or experiment" in no_samples.stderr

    png = tmp_path / "curves.png"
    assert expt("plot", "modes-1", "modes-2", "--out", str(png), cwd=folder).returncode == 0
    with Image.open(png) as image:
        assert image.width > 500
    text = expt("plot", "modes-1", "modes-2", "-m", "top1", cwd=folder)
    assert text.returncode == 0 and "mode=cbn" in text.stdout
    unknown = expt("plot", "modes-1", "-m", "nothing", cwd=folder)
    assert unknown.returncode == 2 and "metrics:" in unknown.stderr and "top1" in unknown.stderr


# -- timm train.py interop -----------------------------------------------------------------------------------


def write_timm_output(folder: Path, model: str, top1: list[float], lr: float | None) -> Path:
    """A train.py output folder written by timm's own summary writer and train.py's args dump."""
    import yaml
    from collections import OrderedDict

    from timm.utils import update_summary

    folder.mkdir(parents=True)
    args = {"model": model, "lr": lr, "epochs": len(top1), "batch_size": 16, "opt": "sgd", "sched": "cosine",
            "data_dir": "/data/pets", "num_classes": 37, "pretrained": True, "mean": None, "crop_pct": None}
    (folder / "args.yaml").write_text(yaml.safe_dump(args, default_flow_style=False))
    for epoch, value in enumerate(top1):
        update_summary(epoch, OrderedDict(loss=2.0 - epoch * 0.1),
                       OrderedDict(loss=1.5 - epoch * 0.1, top1=value, top5=min(100.0, value + 20)),
                       str(folder / "summary.csv"), lr=0.01 * (epoch + 1))
    return folder


def test_import_timm_train_outputs(project_dir: Path, cli, tmp_path: Path):
    a = write_timm_output(tmp_path / "out" / "20240101-resnet18", "resnet18", [10.0, 30.5, 60.8, 55.0], None)
    b = write_timm_output(tmp_path / "out" / "20240102-resnet50", "resnet50", [20.0, 40.5], 0.05)
    assert b"\r\n" in (a / "summary.csv").read_bytes()  # what csv.DictWriter writes: CRLF

    result = cli("import", "timm", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    runs = cli.json("ls")
    assert [(r["id"], r["status"], r["recipe"]) for r in runs] == [("timm-1", "completed", "timm"),
                                                                     ("timm-2", "completed", "timm")]
    first = cli.json("show", "timm-1")
    assert first["params"]["model"] == "resnet18" and "lr" not in first["params"]
    assert first["metrics"]["eval_top1"] == [[1, 10.0], [2, 30.5], [3, 60.8], [4, 55.0]]
    assert set(first["metrics"]) == {"train_loss", "eval_loss", "eval_top1", "eval_top5", "lr"}
    assert first["summary"]["best_eval_top1"] == 60.8 and first["summary"]["best_epoch"] == 3
    assert first["summary"]["final_eval_top1"] == 55.0
    assert cli.json("show", "timm-2")["params"]["lr"] == 0.05

    again = cli("import", "timm", str(a), str(b))
    assert again.exit_code == 0 and "already imported as timm-1" in again.stdout
    assert len(cli.json("ls")) == 2

    data = cli.json("compare", "timm-1", "timm-2")
    assert data["params_diff"]["model"] == ["resnet18", "resnet50"]
    assert data["summary"]["best_eval_top1"] == [60.8, 40.5]
    assert "best_eval_top1" in cli("compare", "timm").stdout
    assert cli("plot", "timm", "--out", str(tmp_path / "timm.png")).exit_code == 0
    assert "timm-1" in cli("export", "-F", "csv").stdout
    resume = cli("rerun", "timm-1")
    assert resume.exit_code == 2 and "imported" in resume.stderr

    before = [cli.json("show", r["id"]) for r in cli.json("ls")]
    assert cli("reindex").exit_code == 0
    assert [cli.json("show", r["id"]) for r in cli.json("ls")] == before


def test_import_refuses_what_is_not_a_timm_folder(project_dir: Path, cli, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = cli("import", "timm", str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no summary.csv" in result.stderr
    broken = write_timm_output(tmp_path / "broken", "resnet18", [1.0], 0.1)
    with open(broken / "summary.csv", "a") as handle:
        handle.write("oops,not,a,number,row,x\n")
    result = cli("import", "timm", str(broken))
    assert result.exit_code == 2 and "summary.csv:3" in result.stderr
    assert not (project_dir / "runs").exists() or not any((project_dir / "runs").iterdir())
    missing = cli("import", "timm", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no such folder" in missing.stderr
    shutil.rmtree(broken)


def test_the_seeds_study_ships_and_says_when_its_data_is_missing(project_dir: Path, cli):
    shutil.copy(Path(__file__).parents[1] / "experiments.toml", project_dir / "experiments.toml")
    listed = {e["name"]: e for e in cli.json("experiments")}
    assert listed["fewshot"]["runs"] == 27 and listed["fewshot"]["sweep"] == {"mode": ["e2e", "fc", "cbn"],
                                                                              "shots": [1, 3, 10]}
    assert listed["fewshot_baselines"]["runs"] == 18
    for name in ("pets_fewshot", "flowers_fewshot"):
        result = cli("run", name)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "no such folder" in result.stderr and "download = true" in result.stderr
    assert not (project_dir / "runs").exists() or not any((project_dir / "runs").iterdir())
