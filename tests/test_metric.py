"""The metric recipe: precision@1, mAP@R and k-NN votes against brute force and pytorch-metric-learning,
the precision drops, the losses and miners, init_from, bad input, and two-phase runs through the real worker."""

from __future__ import annotations

import inspect
import os
import signal
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from conftest import digit_folders, ended, expt, ingested_run, training_metrics, write_project

# -- retrieval scores against independent computations -------------------------------------------------------


def _brute_force(train, train_labels, test, test_labels, distance):
    """Every distance in one matrix, sorted per query: p@1, mAP@R and R-precision (percent)."""
    if distance == "cosine":
        a = train / np.linalg.norm(train, axis=1, keepdims=True)
        b = test / np.linalg.norm(test, axis=1, keepdims=True)
        matrix = -(b @ a.T)
    else:
        matrix = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    order = np.argsort(matrix, axis=1, kind="stable")
    relevant = train_labels[order] == test_labels[:, None]
    counts = np.bincount(train_labels, minlength=test_labels.max() + 1)
    ap, rp = [], []
    for q, label in enumerate(test_labels):
        r = counts[label]
        top = relevant[q, :r]
        precision_at_i = np.cumsum(top) / np.arange(1, r + 1)
        ap.append(np.sum(precision_at_i * top) / r)
        rp.append(top.mean())
    return 100 * relevant[:, 0].mean(), 100 * np.mean(ap), 100 * np.mean(rp), order


def _embeddings(seed: int, n_train=600, n_test=150, dim=16, classes=7):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.6
    train_labels = rng.integers(0, classes, n_train)
    test_labels = rng.integers(0, classes, n_test)
    train = (centres[train_labels] + rng.normal(size=(n_train, dim))).astype(np.float32)
    test = (centres[test_labels] + rng.normal(size=(n_test, dim))).astype(np.float32)
    return train, train_labels, test, test_labels


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("budget", [1 << 22, 700])  # one chunk of queries, and many
def test_retrieval_scores_equal_brute_force_and_pml(distance, budget):
    import faiss
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    from expt.core import evaluate

    train, train_labels, test, test_labels = _embeddings(seed=3)
    found = evaluate.retrieval(train, train_labels, test, test_labels, distance=distance, knn_k=(1, 3, 7),
                               keep=7, budget=budget)
    p1, map_r, r_prec, order = _brute_force(train, train_labels, test, test_labels, distance)
    assert 20 < p1 < 95  # neither trivial nor hopeless: the comparison means something
    assert found.precision_at_1 == pytest.approx(p1)
    assert found.map_at_r == pytest.approx(map_r, abs=1e-6)
    assert found.r_precision == pytest.approx(r_prec, abs=1e-6)
    assert np.array_equal(found.indices, order[:, :7])
    assert np.array_equal(found.hits, train_labels[order[:, 0]] == test_labels)
    assert found.knn_accuracy[1] == pytest.approx(p1)

    if distance == "cosine":
        a, b = evaluate.normalize(train), evaluate.normalize(test)
        knn = FaissKNN(index_init_fn=faiss.IndexFlatIP)
    else:
        a, b, knn = train, test, FaissKNN()
    pml = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                             k="max_bin_count", device=torch.device("cpu"), knn_func=knn)
    expected = pml.get_accuracy(b, test_labels, a, train_labels, ref_includes_query=False)
    assert found.precision_at_1 == pytest.approx(100 * expected["precision_at_1"])
    assert found.map_at_r == pytest.approx(100 * expected["mean_average_precision_at_r"], abs=1e-6)
    assert found.r_precision == pytest.approx(100 * expected["r_precision"], abs=1e-6)


def test_euclidean_neighbour_distances_are_distances():
    from expt.core import evaluate

    train, train_labels, test, test_labels = _embeddings(seed=5, n_train=50, n_test=10)
    found = evaluate.retrieval(train, train_labels, test, test_labels, distance="euclidean", keep=3)
    direct = np.linalg.norm(test[:, None, :] - train[found.indices], axis=-1)
    assert np.allclose(found.distances, direct, atol=1e-4)


def test_knn_vote_majority_and_ties():
    from expt.core import evaluate

    labels = np.array([[2, 1, 1, 2],   # a tie: 2 ranks first
                       [3, 1, 1, 0],   # a majority
                       [0, 4, 4, 4],
                       [5, 5, 0, 0]])
    assert evaluate.knn_vote(labels, 6).tolist() == [2, 1, 4, 5]
    assert evaluate.knn_vote(labels[:, :1], 6).tolist() == labels[:, 0].tolist()


def test_knn_vote_equals_a_loop_on_random_labels():
    from collections import Counter

    from expt.core import evaluate

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(300, 7))
    expected = []
    for row in labels:
        counts = Counter(row.tolist())
        best = max(counts.values())
        expected.append(next(label for label in row.tolist() if counts[label] == best))
    assert evaluate.knn_vote(labels, 4).tolist() == expected


def test_per_class_precision_and_the_drops_on_a_constructed_case():
    from expt.core import evaluate
    from expt.core.recipes.metric import precision_drops

    # 5 classes, 4 test images each but class 4, which has none; the last 2 classes are the unseen ones
    labels = np.repeat(np.arange(4), 4)
    full_hits = np.array([1, 1, 1, 1,  1, 1, 1, 0,  1, 1, 0, 0,  1, 0, 0, 0], bool)
    reduced_hits = np.array([1, 1, 0, 0,  1, 1, 1, 0,  1, 1, 0, 0,  0, 0, 0, 0], bool)
    full = evaluate.per_class_precision(full_hits, labels, 5)
    reduced = evaluate.per_class_precision(reduced_hits, labels, 5)
    assert full[:4].tolist() == [100, 75, 50, 25] and np.isnan(full[4])
    assert reduced[:4].tolist() == [50, 75, 50, 0] and np.isnan(reduced[4])
    drops = precision_drops(full, reduced, unseen=2)  # per class: 50, 0, 0, 25, nan
    assert drops["precision_drop_unseen_classes"] == pytest.approx(25.0)
    assert drops["precision_drop_all_classes"] == pytest.approx(75 / 4)
    assert drops["precision_drop_seen_classes"] == pytest.approx(50 / 3)
    assert precision_drops(full, full, unseen=2)["precision_drop_all_classes"] == 0


def test_class_balanced_batches_cover_the_epoch_in_groups_of_m():
    from expt.core.recipes.metric import class_balanced_order

    labels = np.repeat(np.arange(5), [9, 8, 8, 4, 3])
    first = class_balanced_order(labels, batch_size=8, per_class=4, seed=1, epoch=0)
    same = class_balanced_order(labels, batch_size=8, per_class=4, seed=1, epoch=0)
    again = class_balanced_order(labels, batch_size=8, per_class=4, seed=1, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, same))
    assert not all(np.array_equal(a, b) for a, b in zip(first, again)) and len(first) == len(again) == 4
    assert sorted(np.concatenate(first).tolist()) == list(range(len(labels)))
    # groups of 4 of a class: most batches hold 4 or more of one class (a plain shuffle rarely does)
    assert sum(np.bincount(labels[b]).max() >= 4 for b in first + again) >= 6


# -- losses, miners, heads ------------------------------------------------------------------------------------


def test_loss_args_are_the_real_constructor_keywords():
    from pytorch_metric_learning import losses

    from expt.core.recipes.metric import LOSS_ARGS

    classes = {"epshn_triplet": losses.TripletMarginLoss, "arcface": losses.ArcFaceLoss,
               "subcenter_arcface": losses.SubCenterArcFaceLoss, "proxynca": losses.ProxyNCALoss,
               "contrastive": losses.ContrastiveLoss, "multi_similarity": losses.MultiSimilarityLoss}
    assert set(classes) == set(LOSS_ARGS)
    for name, cls in classes.items():
        keywords = set()
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                keywords |= set(inspect.signature(klass.__init__).parameters)
        missing = set(LOSS_ARGS[name]) - keywords
        assert not missing, (name, missing)


def _point(**values):
    from expt.core.recipes import get_recipe

    return {**get_recipe("metric").params.defaults(), **values}


@pytest.mark.parametrize("loss", ["epshn_triplet", "arcface", "subcenter_arcface", "proxynca", "contrastive",
                                  "multi_similarity"])
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_every_loss_trains_its_embeddings_and_its_own_parameters(loss, distance):
    from expt.core.recipes.metric import OWN_PARAMETERS, _skip, build_loss

    p = _point(loss=loss, distance=distance, embedding_dim=8)
    if _skip(p):
        assert distance == "euclidean"
        return
    criterion, miner = build_loss(p, n_classes=4)
    torch.manual_seed(0)
    embeddings = torch.randn(16, 8, requires_grad=True)
    labels = torch.arange(4).repeat(4)
    value = criterion(embeddings, labels, miner(embeddings, labels)) if miner else criterion(embeddings, labels)
    value.backward()
    assert torch.isfinite(value) and value.item() > 0
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    own = list(criterion.parameters())
    assert bool(own) == (loss in OWN_PARAMETERS)
    assert all(q.grad is not None for q in own)
    assert (miner is not None) == (loss in ("epshn_triplet", "multi_similarity"))


@pytest.mark.parametrize("head", ["linear", "bn1d", "skip"])
def test_heads(head):
    from expt.core.recipes.metric import build_head

    torch.manual_seed(0)
    module = build_head(head, 12, 6).train()
    x = torch.randn(5, 12)
    assert module(x).shape == (5, 6)
    if head == "skip":  # the residual block starts at zero: the head starts as its projection
        assert torch.allclose(module(x), module.project(x))


# -- init_from --------------------------------------------------------------------------------------------


def test_init_from_loads_the_backbone_of_a_classifier_and_of_a_metric_run(tmp_path: Path):
    import timm

    from expt.core import models, training
    from expt.core.recipes.metric import build_model
    from expt.errors import UsageError

    torch.manual_seed(1)
    classifier = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    models.add_conditional_batchnorm(classifier)  # a finetune cbn run: weights are original + delta
    layer = models.norm_layers(classifier)[0]
    with torch.no_grad():
        layer.parametrizations.weight[0].delta.add_(0.5)
    effective = layer.weight.detach().clone()
    (tmp_path / "cls-1").mkdir()
    training.Checkpoint(tmp_path / "cls-1", None).save({"position": {}, "state": {"model": classifier.state_dict()}})
    p = _point(model="test_efficientnet", pretrained=False, init_from="cls-1", embedding_dim=8)
    model = build_model(p, tmp_path, log=lambda _: None)
    loaded = models.norm_layers(model.backbone)[0]
    assert torch.equal(loaded.weight, effective)
    assert torch.equal(model.backbone.conv_stem.weight, classifier.conv_stem.weight)

    (tmp_path / "dml-1").mkdir()
    training.Checkpoint(tmp_path / "dml-1", None).save({"position": {}, "state": {"model": model.state_dict()}})
    again = build_model({**p, "init_from": "dml-1"}, tmp_path, log=lambda _: None)
    assert torch.equal(again.backbone.conv_stem.weight, classifier.conv_stem.weight)

    (tmp_path / "empty-1").mkdir()
    with pytest.raises(UsageError, match="checkpoint.pt does not exist"):
        build_model({**p, "init_from": "empty-1"}, tmp_path)
    with pytest.raises(UsageError, match="no such run"):
        build_model({**p, "init_from": "nope-1"}, tmp_path)
    with pytest.raises(UsageError, match="weight tensors of .* are missing .* is it the same model"):
        build_model({**p, "model": "resnet10t", "init_from": "cls-1"}, tmp_path)


# -- bad input through the CLI ------------------------------------------------------------------------------

CONFIG_PROBLEMS = """\
[experiments.typo]
recipe = "metric"
loss = "arcface"
loss_args = {margn = 0.3}

[experiments.miner]
recipe = "metric"
loss = "proxynca"
miner = "hard"
"""


def test_config_problems_are_one_line_each(project_dir: Path, cli):
    (project_dir / "experiments.toml").write_text(CONFIG_PROBLEMS)
    result = cli("experiments")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert "typo: loss_args.margn: not an argument of arcface (it takes margin, scale)" in lines[0]
    assert "miner: miner 'hard': proxynca learns class weights or proxies and takes no miner" in lines[1]


PREFLIGHT = """\
[experiments.cub]
recipe = "metric"
dataset = "cub200"
data_dir = "CUB_200_2011"

[experiments.arc_l2]
recipe = "metric"
loss = "arcface"
distance = "euclidean"
"""


def test_missing_cub_file_and_unfit_distance_are_refused_before_queueing(project_dir: Path, cli):
    (project_dir / "experiments.toml").write_text(PREFLIGHT)
    cub = project_dir / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    for name in ("images.txt", "classes.txt"):
        (cub / name).write_text("1 a\n")
    result = cli("run", "cub")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: cub: CUB-200-2011 in CUB_200_2011: missing image_class_labels.txt (expected the CUB_200_2011 "
        "release: images.txt, image_class_labels.txt, classes.txt and images/)"]
    result = cli("run", "arc_l2")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: experiment 'arc_l2': every point of its sweep was skipped (arcface is defined on cosine similarity "
        "(distance = 'cosine' only))"]
    assert not (project_dir / "runs").exists() or not any((project_dir / "runs").iterdir())


def test_missing_init_from_run_is_refused_before_queueing(tmp_path: Path):
    folder = write_project(tmp_path / "proj", '[experiments.init]\nrecipe = "metric"\ninit_from = "classifier-7"\n')
    result = expt("run", "init", cwd=folder)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: init: init_from 'classifier-7': no such run in {folder / 'runs'} "
                                     "and no such weights file")
    assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())


def test_the_cub_loader_names_the_missing_file(tmp_path: Path):
    from expt.core import data
    from expt.errors import UsageError

    (tmp_path / "images").mkdir()
    (tmp_path / "images.txt").write_text("1 a/1.jpg\n")
    with pytest.raises(UsageError, match=r"missing image_class_labels.txt"):
        data.load_splits({"dataset": "cub200", "data_dir": str(tmp_path), "test_fraction": 0.2, "split_seed": 0})


def test_the_cub_loader_reads_the_release_layout(tmp_path: Path):
    from PIL import Image

    from expt.core import data

    root = tmp_path / "CUB_200_2011"
    lines, labels, classes = [], [], ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    for c, name in enumerate(classes):
        (root / "images" / name).mkdir(parents=True)
        for n in range(5):
            relative = f"{name}/{name.split('.')[1]}_{n:04d}.jpg"
            Image.new("RGB", (12, 10), (40 * c, 10 * n, 0)).save(root / "images" / relative)
            lines.append(relative)
            labels.append(c + 1)
    (root / "images.txt").write_text("".join(f"{i + 1} {line}\n" for i, line in enumerate(lines)))
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(labels)))
    (root / "classes.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(classes)))
    splits = data.load_splits({"dataset": "cub200", "data_dir": str(tmp_path), "test_fraction": 0.2, "split_seed": 42})
    assert splits.train.classes == classes
    assert splits.train.counts().tolist() == [4, 4, 4] and splits.test.counts().tolist() == [1, 1, 1]
    assert not set(splits.train.names) & set(splits.test.names)
    assert splits.test.image(0).size == (12, 10)
    other = data.load_splits({"dataset": "cub200", "data_dir": str(root), "test_fraction": 0.2, "split_seed": 42,
                              "seed": 7})
    assert other.test.names == splits.test.names  # the split follows split_seed, not the run's seed


# -- two phases through the real worker ---------------------------------------------------------------------

RUN_TOML = """\
[launcher]
jobs = 2                   # one thread per run: two runs at once on two cores

[experiments.dml]
recipe = "metric"
dataset = "imagefolder"
data_dir = "digits"
test_fraction = 0.25
model = "test_resnet"
pretrained = false
img_size = 32
epochs = 2
batch_size = 16
embedding_dim = 32
unseen_classes = 2
knn_k = [1, 3]

[experiments.dml.sweep]
loss = ["arcface", "epshn_triplet"]

[experiments.dml_init]
recipe = "metric"
dataset = "imagefolder"
data_dir = "digits"
test_fraction = 0.25
model = "test_resnet"
pretrained = false
img_size = 32
epochs = 1
batch_size = 16
init_from = "dml-2"
"""

SCALARS = ["precision_at_1", "map_at_r", "r_precision", "knn1_accuracy", "knn3_accuracy", "seen_accuracy",
           "unseen_accuracy", "train_loss", "best_test_accuracy", "best_epoch",
           "precision_at_1_2", "map_at_r2", "r_precision2", "knn1_accuracy2", "knn3_accuracy2", "seen_accuracy2",
           "unseen_accuracy2", "train_loss2", "best_test_accuracy2", "best_epoch2",
           "precision_drop_unseen_classes", "precision_drop_all_classes", "precision_drop_seen_classes"]
TABLES = ["all_classes_metrics", "all_classes_classification_report", "limited_classes_metrics",
          "limited_classes_classification_report", "comparison_unseen_classes_metrics",
          "comparison_seen_classes_metrics"]


@pytest.mark.slow
def test_two_phase_runs_record_every_scalar_table_and_neighbour(tmp_path: Path):
    folder = write_project(tmp_path / "proj", RUN_TOML)
    digit_folders(folder / "digits")
    result = expt("run", "dml", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r["params"]["loss"]: r for r in orjson.loads(expt("ls", "--json", cwd=folder).stdout)}
    assert {r["status"] for r in runs.values()} == {"completed"}
    for loss, run in runs.items():
        summary = run["summary"]
        missing = [k for k in SCALARS if not isinstance(summary.get(k), (int, float))]
        assert not missing, (loss, missing)
        assert 0 <= summary["precision_at_1"] <= 100 and summary["best_epoch"] in (1, 2)
        assert (summary["classes"], summary["train_images"], summary["test_images"]) == (5, 30, 10)
        run_dir = Path(run["run_dir"]) if "run_dir" in run else folder / "runs" / run["id"]
        for table in TABLES:
            data = orjson.loads((run_dir / "tables" / f"{table}.json").read_bytes())
            assert data["rows"] and (run_dir / "tables" / f"{table}.csv").is_file(), table
        per_class = orjson.loads((run_dir / "tables" / "all_classes_metrics.json").read_bytes())
        assert per_class["columns"] == ["class", "test_samples", "train_samples", "precision_at_1"]
        assert [r["class"] for r in per_class["rows"]] == [f"digit{i}" for i in range(5)]
        assert [(r["test_samples"], r["train_samples"]) for r in per_class["rows"]] == [(2, 6)] * 5
        limited = orjson.loads((run_dir / "tables" / "limited_classes_metrics.json").read_bytes())
        assert [r["trained_on"] for r in limited["rows"]] == [6, 6, 6, 0, 0]
        unseen = orjson.loads((run_dir / "tables" / "comparison_unseen_classes_metrics.json").read_bytes())
        assert [r["class"] for r in unseen["rows"]] == ["digit3", "digit4"]
        drops = [r["drop"] for r in unseen["rows"]]
        assert summary["precision_drop_unseen_classes"] == pytest.approx(sum(drops) / 2, abs=1e-3)

        neighbours = orjson.loads((run_dir / "neighbours.json").read_bytes())
        assert neighbours["distance"] == "cosine" and neighbours["k"] == 3
        assert len(neighbours["queries"]) == 10
        first = neighbours["queries"][0]
        assert {"test_index", "class", "image", "neighbours"} <= set(first)
        assert len(first["neighbours"]) == 3
        assert {"train_index", "class", "distance", "image"} <= set(first["neighbours"][0])
        assert first["correct"] == (first["neighbours"][0]["class"] == first["class"])
        distances = [n["distance"] for n in first["neighbours"]]
        assert distances == sorted(distances)
        images = [q["image"] for q in neighbours["queries"]] + [n["image"] for n in first["neighbours"]]
        assert all(image and (run_dir / image).is_file() for image in images)
        assert (run_dir / "neighbours2.json").is_file()

        metrics = orjson.loads(expt("show", run["id"], "--json", cwd=folder).stdout)["metrics"]
        for key in ("train_loss", "test_accuracy", "map_at_r", "train_loss2", "test_accuracy2", "unseen_accuracy2"):
            assert [int(step) for step, _ in metrics[key]] == [1, 2], key
        log = (run_dir / "log.txt").read_text()
        assert log.rstrip().splitlines()[-1].startswith("Best metric: ")

    shown = expt("show", runs["arcface"]["id"], "--tables", cwd=folder)
    assert shown.returncode == 0
    for table in TABLES:
        assert table in shown.stdout
    for metric in ("test_accuracy", "knn3_accuracy", "unseen_accuracy", "test_accuracy2", "unseen_accuracy2"):
        assert f" {metric} " in shown.stdout or shown.stdout.count(f" {metric}\n"), metric  # whole, not cut
    compared = expt("compare", "dml", cwd=folder)
    assert compared.returncode == 0, compared.stderr
    for column in ("precision_at_1", "map_at_r", "precision_drop_unseen_classes", "precision_drop_all_classes"):
        assert column in compared.stdout

    init = expt("run", "dml_init", cwd=folder)
    assert init.returncode == 0, init.stdout + init.stderr
    log = (folder / "runs" / "dml_init-1" / "log.txt").read_text()
    assert "init_from dml-2: " in log and "tensors loaded" in log


RESUME_BODY = """\
recipe = "metric"
dataset = "imagefolder"
data_dir = "digits"
test_fraction = 0.25
model = "test_resnet"
pretrained = false
img_size = 24
epochs = 10
batch_size = 2
embedding_dim = 16
loss = "proxynca"
unseen_classes = 1
knn_k = [1, 3]
"""


@pytest.mark.slow
def test_a_run_stopped_in_its_second_phase_resumes_there_and_matches_a_straight_one(tmp_path: Path):
    from expt.store import Store

    from conftest import wait_for

    folder = write_project(tmp_path / "proj", f"[launcher]\njobs = 2\n\n[experiments.straight]\n{RESUME_BODY}\n"
                                              f"[experiments.interrupted]\n{RESUME_BODY}")
    digit_folders(folder / "digits", classes=4, per_class=8)
    assert expt("run", "straight", cwd=folder).returncode == 0
    assert expt("run", "interrupted", "--detach", cwd=folder).returncode == 0

    def in_second_phase() -> bool:
        run = ingested_run(folder, "interrupted-1")
        return run.status == "running" and run.phase == "reduced" and run.epochs == 20 and run.epoch >= 11

    wait_for(in_second_phase, timeout=180, interval=0.05, what="the second phase")
    with Store(folder / "runs.db") as store:
        os.kill(store.get("interrupted-1").pid, signal.SIGTERM)  # what `expt stop` sends, without its start-up

    assert wait_for(lambda: ended(folder, "interrupted-1"), timeout=120, what="the stop") == "stopped"
    resumed = expt("resume", "interrupted-1", cwd=folder)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming reduced at epoch" in (folder / "runs" / "interrupted-1" / "log.txt").read_text()
    with Store(folder / "runs.db") as store:
        straight, interrupted = store.get("straight-1"), store.get("interrupted-1")
        assert interrupted.status == "completed" and (interrupted.epoch, interrupted.epochs) == (20, 20)
        assert training_metrics(store, straight) == training_metrics(store, interrupted)
        for key in ("precision_at_1", "precision_at_1_2", "map_at_r2", "precision_drop_unseen_classes",
                    "precision_drop_all_classes"):
            assert straight.summary[key] == interrupted.summary[key], key
