"""The scaling recipe (seed 002): the stage table, compound scaling, the grid constraint, the seed's
preprocessing, sigma and the FixRes resolution, FLOPs against 2^phi, and runs through the real worker."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from expt.config import parse_config
from expt.core.data import Images
from expt.core.recipes import scaling
from expt.core.recipes.scaling import SEED_STAGES
from expt.store import Store

from conftest import ended, expt, ingested_run, training_metrics, wait_for, write_project

SEED_GRID = {(1.2, 1.05, 1.23), (1.2, 1.23, 1.05), (1.4, 1.02, 1.17), (1.4, 1.05, 1.14), (1.4, 1.14, 1.05),
             (1.4, 1.17, 1.02)}

# -- the stage table ------------------------------------------------------------------------------------------


def _expanded(in_chs: int, t: float) -> int:
    """timm's InvertedResidual widens to a multiple of 8 (make_divisible, never below 90%)."""
    mid = int(in_chs * t + 4) // 8 * 8
    return mid + 8 if mid < 0.9 * in_chs * t else mid


def _count(stages: list[dict], classes: int) -> int:
    """Parameters of a stage table by hand: bias-free convolutions, two per BatchNorm channel."""
    total, cin = 0, 3
    for stage in stages:
        k, cout = stage["kernel"], stage["channels"]
        for _ in range(stage["layers"]):
            if stage["type"] == "conv":
                total += k * k * cin * cout + 2 * cout
            elif stage["expand"] == 1:  # depthwise k x k, BN, pointwise, BN
                total += k * k * cin + 2 * cin + cin * cout + 2 * cout
            else:  # pointwise expansion, BN, depthwise, BN, pointwise projection, BN
                mid = _expanded(cin, stage["expand"])
                total += cin * mid + 2 * mid + k * k * mid + 2 * mid + mid * cout + 2 * cout
            cin = cout
    return total + 2 * cin + cin * classes + classes  # the head's BatchNorm and the classifier


def test_the_seed_table_builds_the_expected_network():
    import torch

    model = scaling.build_model(SEED_STAGES, num_classes=2)
    assert sum(p.numel() for p in model.parameters()) == _count(SEED_STAGES, 2) == 40_366
    kinds = [type(stage[0]).__name__ for stage in model.blocks]
    assert kinds == ["ConvBnAct", "DepthwiseSeparableConv", "InvertedResidual", "InvertedResidual",
                     "InvertedResidual", "ConvBnAct"]
    assert [len(stage) for stage in model.blocks] == [1, 1, 1, 2, 1, 1]
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    features = model.forward_features(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, 40, 8, 8)  # strides 2, 2, 1, 1, 2, 1: stage 6 works at 8 x 8
    rows = scaling.stage_rows(SEED_STAGES, 64)
    assert [r["resolution"] for r in rows] == ["64 x 64", "32 x 32", "16 x 16", "16 x 16", "16 x 16", "8 x 8"]


def test_squeeze_excite_and_other_tables_count_as_expected():
    table = [{"type": "conv", "kernel": 3, "channels": 8, "layers": 1, "stride": 2},
             {"type": "mbconv", "kernel": 5, "channels": 12, "layers": 3, "stride": 2, "expand": 4},
             {"type": "mbconv", "kernel": 3, "channels": 20, "layers": 1, "stride": 1, "expand": 6, "se": 0.25}]
    model = scaling.build_model(table, num_classes=7)
    se = model.blocks[2][0].se  # squeeze to a quarter of the block's input: 12 -> 3 -> 72 channels
    assert (se.conv_reduce.in_channels, se.conv_reduce.out_channels) == (72, 3)
    se_params = 72 * 3 + 3 + 3 * 72 + 72
    assert sum(p.numel() for p in model.parameters()) == _count(table, 7) + se_params


def test_scaling_follows_the_seeds_rounding_rules():
    scaled = scaling.scale_stages(SEED_STAGES, alpha=1.2, beta=1.05, phi=4)  # depth x 2.0736, width x 1.2155
    assert [(s["channels"], s["layers"]) for s in scaled] == [
        (12, 1),    # stage 1 keeps its size
        (19, 1),    # stage 2: 16 x 1.2155 = 19.4 -> 19, always one layer
        (27, 2),    # 22 x 1.2155 = 26.7 -> 27; 1 x 2.07 -> 2
        (32, 4),    # 31.6 -> 32; 4.15 -> 4
        (39, 2),    # 38.9 -> 39; 2.07 -> 2
        (40, 1),    # stage 6 keeps its size
    ]
    assert scaling.scale_stages(SEED_STAGES, 1.2, 1.05, 0) == SEED_STAGES
    halves = scaling.scale_stages(SEED_STAGES, alpha=1.25, beta=1.25, phi=1)
    assert halves[3]["layers"] == 3  # 2 x 1.25 = 2.5 rounds up (Python's round() would give 2)
    assert halves[3]["channels"] == 33  # 26 x 1.25 = 32.5 -> 33
    assert scaling.scaled_resolution(64, 1.23, 4) == 146  # 64 x 2.289 = 146.5 -> 146.49... -> 146
    assert scaling.scaled_resolution(32, 1.23, 1) == 39  # 39.36
    override = [dict(s, scale="both") if i == 0 else s for i, s in enumerate(SEED_STAGES)]
    assert scaling.scale_stages(override, 2.0, 2.0, 1)[0] == dict(override[0], channels=24, layers=2)


def test_flops_grow_close_to_two_to_the_phi():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = scaling.build_model(SEED_STAGES, 2).eval()
    base = scaling.count_flops(model, 64)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # counted on the meta device: the same as a real forward pass
        model(torch.zeros(1, 3, 64, 64))
    assert base == counter.get_total_flops() > 0
    assert next(model.parameters()).device.type == "cpu"
    for alpha, beta, gamma in sorted(SEED_GRID):
        previous = 1.0
        for phi in (1, 2, 4):
            model = scaling.build_model(scaling.scale_stages(SEED_STAGES, alpha, beta, phi), 2)
            ratio = scaling.count_flops(model, scaling.scaled_resolution(64, gamma, phi)) / base
            # below 2^phi: stages 1 and 6 keep their size and one-layer stages round 1.2 down to 1
            assert 0.7 <= ratio / 2 ** phi <= 1.05, (alpha, beta, gamma, phi, ratio)
            assert ratio > previous
            previous = ratio
    wider = scaling.count_flops(scaling.build_model(scaling.scale_stages(SEED_STAGES, 1, 2, 1), 2), 64)
    assert 3.0 < wider / base < 4.2  # width enters squared (stages 1 and 6 excepted)


# -- the grid-search constraint ------------------------------------------------------------------------------------

GRID_TOML = """\
[experiments.grid]
recipe = "scaling"
phi = 1.0
constrain = true

[experiments.grid.sweep]
alpha = [0.9, 1.2, 1.4]
beta = [1.02, 1.05, 1.14, 1.17, 1.23]
gamma = [1.02, 1.05, 1.14, 1.17, 1.23]

[experiments.free]
recipe = "scaling"
phi = 1.0

[experiments.free.sweep]
alpha = [0.9, 1.2]
"""


def test_only_points_near_the_flops_target_become_runs():
    config = parse_config(GRID_TOML, Path("experiments.toml"))
    expansion = config.experiment("grid").expand()
    chosen = {(p.params["alpha"], p.params["beta"], p.params["gamma"]) for p in expansion.points}
    assert chosen == SEED_GRID
    assert len(expansion.skipped) == 75 - 6
    reasons = {(v["alpha"], v["beta"], v["gamma"]): reason for v, reason in expansion.skipped}
    assert reasons[(0.9, 1.23, 1.23)] == "alpha below 1"
    assert reasons[(1.4, 1.23, 1.23)] == "alpha*beta^2*gamma^2 = 3.204, not within 0.01 of 2"
    for point in expansion.points:
        assert abs(scaling.constraint(point.params) - 2) <= 0.01
    free = config.experiment("free").expand()  # without constrain every point runs
    assert len(free.points) == 2 and not free.skipped


def test_skipped_points_are_listed_not_dropped(tmp_path: Path):
    project = write_project(tmp_path / "proj", GRID_TOML)
    listing = orjson.loads(expt("experiments", "--json", cwd=project).stdout)
    assert {r["name"]: (r["runs"], r["skipped"]) for r in listing} == {"grid": (6, 69), "free": (2, 0)}
    dry = expt("run", "grid", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert "grid: 6 runs" in dry.stdout
    assert dry.stdout.count("skipped ") == 69
    assert "skipped alpha=0.9 beta=1.02 gamma=1.02: alpha below 1" in dry.stdout


# -- bad stage tables ------------------------------------------------------------------------------------------


def test_a_bad_stage_table_is_one_line_per_problem_and_exit_2(tmp_path: Path):
    project = write_project(tmp_path / "proj", """\
[experiments.bad]
recipe = "scaling"
stages = [
    {type = "conv", kernel = 4, channels = 8, layers = 1, stride = 2},
    {type = "mbconv", kernel = 3, channels = 8, layers = 0, stride = 3},
    {type = "mbcov", kernel = 3, chanels = 8, layers = 1, stride = 1, expand = 6},
    {type = "conv", kernel = 1, channels = 8, layers = 1, stride = 1, expand = 2},
]

[experiments.crops]
recipe = "scaling"
crop_min = 0.8
k_image_test = 60

[experiments.notables]
recipe = "scaling"
stages = [1, 2]
""")
    result = expt("run", "bad", cwd=project)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    expected = [
        "bad: stages[0].kernel: expected an odd kernel size, got 4",
        "bad: stages[1].layers: expected an int >= 1, got 0",
        "bad: stages[1].stride: expected 1 or 2, got 3",
        "bad: stages[1]: missing 'expand'",
        "bad: stages[2].chanels: unknown stage key (did you mean 'channels'?)",
        "bad: stages[2]: missing 'channels'",
        "bad: stages[2].type: expected one of conv, mbconv, got 'mbcov'",
        "bad: stages[3].expand: only mbconv stages have an expansion ratio",
        "crops: crop_min (0.8) is above crop_max (0.7)",
        "crops: k_image_test (60) is below train_res (64)",
        "notables.stages: expected list[table], got an item int 1",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, lines)
    assert all(re.match(r"(error: )?experiments\.toml:\d+: ", line) for line in lines), lines
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())


# -- preprocessing, sigma and the FixRes resolution ------------------------------------------------------------


def _images(size: tuple[int, int], n: int) -> Images:
    picture = Image.new("RGB", size, (120, 60, 30))
    return Images([picture] * n, np.zeros(n, dtype=np.int64), ["x"], [f"x/{i}" for i in range(n)])


def test_sigma_is_the_mean_crop_proportion():
    crop = scaling.TrainTransform(64, 0.2, 0.7, 0.5, 0.2, 0.2)
    square = scaling.estimate_sigma(_images((80, 80), 4000), crop, seed=0)
    assert abs(square - 0.45) < 0.01  # the mean of U(0.2, 0.7)
    # 2:1 images fit a square of at most half their area: E[min(p, 0.5)] = 0.21 + 0.2 = 0.41
    wide = scaling.estimate_sigma(_images((160, 80), 4000), crop, seed=0)
    assert abs(wide - 0.41) < 0.01
    side = scaling.estimate_sigma(_images((80, 80), 4000), crop, seed=0, of="side")
    assert abs(side - 0.6617) < 0.01  # E[sqrt(p)] = (2/3) (0.7^1.5 - 0.2^1.5) / 0.5
    assert scaling.estimate_sigma(_images((80, 80), 500), crop, seed=1) == \
        scaling.estimate_sigma(_images((80, 80), 500), crop, seed=1)


def test_sigma_reads_image_files_without_decoding_them(tmp_path: Path):
    paths = []
    for i in range(200):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (60, 120), (i, 0, 0)).save(path)  # 1:2, portrait
        paths.append(path)
    images = Images(paths, np.zeros(len(paths), dtype=np.int64), ["x"], [p.name for p in paths])
    assert scaling.image_size(images, 0) == (60, 120)
    crop = scaling.TrainTransform(32, 0.2, 0.7, 0.5, 0.2, 0.2)
    assert abs(scaling.estimate_sigma(images, crop, seed=0) - 0.41) < 0.03
    assert crop(images.image(3)).shape == (3, 32, 32)


def test_training_crops_are_square_inside_the_image_and_seeded():
    crop = scaling.TrainTransform(32, 0.2, 0.7, 0.5, 0.2, 0.2)
    rng = random.Random(0)
    for _ in range(2000):
        (left, top, right, bottom), proportion = crop.crop(150, 60, rng)
        assert 0 <= left and 0 <= top and right <= 150 + 1e-9 and bottom <= 60 + 1e-9  # never padded
        assert abs((right - left) - (bottom - top)) < 1e-9
        assert 0.2 * 0.999 <= proportion <= min(0.7, 60 / 150) + 1e-9
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 150, 3), dtype=np.uint8))
    random.seed(5)
    first = crop(image)
    random.seed(5)
    assert first.shape == (3, 32, 32) and str(first.dtype) == "torch.uint8"
    assert (crop(image) == first).all()
    random.seed(6)
    assert not (crop(image) == first).all()


def test_the_test_preprocessing_resizes_the_short_side_then_centre_crops():
    # a 200 x 100 image whose middle 100 x 100 is white: resize to short side 72, crop 64 -> all white
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 50:150] = 255
    out = scaling.EvalTransform(64, 72)(Image.fromarray(array))
    assert out.shape == (3, 64, 64)
    assert int(out.min()) == 255
    whole = scaling.EvalTransform(64, 64)(Image.fromarray(array))  # the crop is exactly the white square
    assert int(whole[:, :, 1:-1].min()) == 255 and int(whole[:, :, 0].max()) < 255  # (the edge blends in black)


def test_the_fixres_resolution_for_the_seeds_numbers():
    r = 0.444 * 72 / 64
    assert abs(r - 0.4995) < 1e-9
    assert scaling.fixres_resolution(64, r) == 128  # twice the training resolution
    assert scaling.fixres_resolution(32, 0.4543 * 36 / 32) == 64
    assert scaling.fixres_resolution(64, 1.0) == 64
    assert scaling.fixres_resolution(60, 0.9) == 64  # 66.7 -> the nearest multiple of 8


# -- through the real worker ---------------------------------------------------------------------------------

TINY_STAGES = """stages = [
    {type = "conv", kernel = 3, channels = 8, layers = 1, stride = 2},
    {type = "mbconv", kernel = 3, channels = 8, layers = 1, stride = 2, expand = 1},
    {type = "mbconv", kernel = 3, channels = 12, layers = 1, stride = 1, expand = 4, se = 0.25},
    {type = "conv", kernel = 1, channels = 16, layers = 1, stride = 1},
]"""
TINY_RUN = f"""\
recipe = "scaling"
{TINY_STAGES}
train_res = 16
k_image_test = 18
hflip = 0.0
batch_size = 64
lr = 0.01
fixres = true
fixres_lr = 0.002
"""
RUN_TOML = f"""\
[launcher]
jobs = 2  # one thread per run: two threads per run on two busy cores are many times slower

[experiments.tiny]
{TINY_RUN}epochs = 2
fixres_epochs = 1
phi = 1.0

[experiments.tiny.sweep]
beta = [1.0, 1.2]

[experiments.straight]
{TINY_RUN}epochs = 2
fixres_epochs = 3

[experiments.interrupted]
{TINY_RUN}epochs = 2
fixres_epochs = 3
"""
SUMMARY_KEYS = ("params", "flops", "flops_ratio", "ideal_ratio", "constraint", "resolution", "test_loss", "test_acc",
                "best_top1", "best_epoch", "sigma", "r", "test_resolution", "acc_before", "acc_after",
                "test_loss_before", "test_loss_after", "acc_untuned", "best_top1_fixres")


@pytest.mark.slow
def test_a_two_epoch_run_with_fixres_records_every_figure(tmp_path: Path):
    project = write_project(tmp_path / "proj", RUN_TOML)
    result = expt("run", "tiny", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    with Store(project / "runs.db") as store:
        store.ingest()
        runs = [store.get("tiny-1"), store.get("tiny-2")]
        curves = [store.metrics(run) for run in runs]
    for run, curve in zip(runs, curves):
        assert run.status == "completed", run.error
        missing = [k for k in SUMMARY_KEYS if k not in run.summary]
        assert not missing, missing
        summary = run.summary
        assert abs(summary["sigma"] - 0.45) < 0.02  # digits are square
        assert summary["r"] == pytest.approx(summary["sigma"] * 18 / 16)
        assert summary["test_resolution"] == 32
        assert summary["acc_before"] == summary["test_acc"] and summary["test_loss_before"] == summary["test_loss"]
        assert summary["acc_after"] == curve["top1_fixres"][-1][1]
        assert summary["test_acc"] == curve["top1"][-1][1]
        assert 10 < summary["acc_before"] <= 100 and 10 < summary["acc_after"] <= 100
        assert summary["ideal_ratio"] == 2.0
        folder = run.path / "tables"
        fixres = orjson.loads((folder / "fixres.json").read_bytes())
        assert [row["resolution"] for row in fixres["rows"]] == [16, 32, 32]
        assert len(orjson.loads((folder / "stages.json").read_bytes())["rows"]) == 4
        assert "Best metric: " in (run.path / "log.txt").read_text()
    assert runs[0].summary["flops_ratio"] == pytest.approx(1.0)  # beta = 1: the baseline itself
    assert runs[1].summary["flops_ratio"] > 1.2 and runs[1].summary["params"] > runs[0].summary["params"]
    assert [step for step, _ in curves[0]["top1"]] == [1, 2] and [s for s, _ in curves[0]["top1_fixres"]] == [1]

    shown = expt("compare", "tiny", cwd=project)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    by_accuracy = sorted(runs, key=lambda r: -r.summary["test_acc"])
    assert lines[at].split()[1:] == [r.id for r in by_accuracy]  # best test accuracy first, like the seed's table
    names = [line.split()[0] for line in lines[at + 1:at + 7]]
    assert names == ["test_loss", "test_acc", "flops_ratio", "ideal_ratio", "acc_before", "acc_after"]


@pytest.mark.slow
def test_a_run_stopped_in_its_fixres_phase_resumes_to_the_same_figures(tmp_path: Path):
    project = write_project(tmp_path / "proj", RUN_TOML)
    assert expt("run", "straight", cwd=project).returncode == 0
    assert expt("run", "interrupted", "--detach", cwd=project).returncode == 0

    def in_fixres() -> bool:
        run = ingested_run(project, "interrupted-1")
        return run.status == "running" and run.phase == "fixres"

    wait_for(in_fixres, timeout=180, interval=0.05, what="the FixRes phase")
    assert expt("stop", "interrupted-1", cwd=project).returncode == 0

    assert wait_for(lambda: ended(project, "interrupted-1"), timeout=120, what="the stop") == "stopped"
    assert (project / "runs" / "interrupted-1" / "checkpoint-fixres.pt").is_file()
    assert expt("resume", "interrupted-1", cwd=project).returncode == 0
    wait_for(lambda: ended(project, "interrupted-1") == "completed", timeout=180, what="the resumed run")
    with Store(project / "runs.db") as store:
        store.ingest()
        straight, resumed = store.get("straight-1"), store.get("interrupted-1")
        assert training_metrics(store, straight) == training_metrics(store, resumed)
    for key in SUMMARY_KEYS:
        assert straight.summary[key] == resumed.summary[key], key
