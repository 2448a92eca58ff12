"""Deep metric learning for classification (seed 003): embeddings, faiss precision@1, unseen classes.

A timm backbone (``num_classes=0``) and an embedding head train with a pytorch-metric-learning loss;
a test image is classified by its nearest training embedding (faiss, exact), so precision@1 is the
test accuracy. With ``unseen_classes = K`` the run trains a second model on the same split without
the last K classes and evaluates both against every class: the precision drops tell how well the
embedding generalises to classes it never saw. Both phases are one run (metrics of the second end
in ``2``), so stop and resume work per phase and ``expt compare`` sees every scalar of the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.recipes import check_data, recipe
from expt.errors import UsageError
from expt.modelnames import check_timm_model
from expt.params import TRAINING, Param, data_params, params

if TYPE_CHECKING:
    import numpy as np

    from expt.core.evaluate import Retrieval
    from expt.core.tracking import Tracker

LOSSES = ("epshn_triplet", "arcface", "subcenter_arcface", "proxynca", "contrastive", "multi_similarity")
MINERS = ("auto", "none", "easy_semihard", "semihard", "hard", "multi_similarity")
HEADS = ("linear", "bn1d", "skip")
# Losses defined on cosine similarity only (ArcFace's margin is an angle; MS weighs similarities).
COSINE_ONLY = ("arcface", "subcenter_arcface", "multi_similarity")
# Losses that own parameters (class weights, proxies): no miner, their own optimizer group.
OWN_PARAMETERS = ("arcface", "subcenter_arcface", "proxynca")
DEFAULT_MINER = {"epshn_triplet": "easy_semihard", "multi_similarity": "multi_similarity"}
# What ``loss_args`` may set, per loss (the constructors' own keywords; tests check them against PML).
LOSS_ARGS = {
    "epshn_triplet": ("margin", "swap", "smooth_loss", "triplets_per_anchor"),
    "arcface": ("margin", "scale"),
    "subcenter_arcface": ("margin", "scale", "sub_centers"),
    "proxynca": ("softmax_scale",),
    "contrastive": ("pos_margin", "neg_margin"),
    "multi_similarity": ("alpha", "beta", "base"),
}
SUMMARY_COLUMNS = ("precision_at_1", "map_at_r", "precision_drop_unseen_classes", "precision_drop_all_classes")
REDUCED = "reduced"             # the second phase's name: progress label and checkpoint-reduced.pt
NEIGHBOURS = "neighbours.json"  # the full model's top-k neighbours of every test image (the TUI reads it)
PICTURED_QUERIES = 200          # test images given a thumbnail, spread over the classes (mistakes first)
PICTURED_NEIGHBOURS = 5         # neighbours of each pictured query given a thumbnail
THUMBNAIL = 128
CACHE_BYTES = 2 << 30           # image sets up to this size are transformed once and kept as uint8

PARAMS = params(
    Param("model", str, "efficientnet_lite0", "timm backbone (its pooled features, num_classes = 0)",
          validator=check_timm_model),
    Param("pretrained", bool, True, "start from pretrained weights (efficientnet_lite0: shipped offline; "
          "others: timm's hub download, needs a network)"),
    Param("init_from", str, "", "a run id (or a weights file) whose trained backbone starts this run: the seed's "
          "classifier first, then metric learning; the backbone tensors of its checkpoint.pt that fit are loaded"),
    Param("embedding_dim", int, 128, "embedding size", min=2, max=65_536),
    Param("head", str, "linear", "embedding head: linear, bn1d (linear + BatchNorm1d), skip (linear + a residual "
          "BN-ReLU-linear block, zero-initialised)", choices=HEADS),
    Param("loss", str, "epshn_triplet", "pytorch-metric-learning loss: epshn_triplet (triplet margin loss on easy "
          "positives and semi-hard negatives), arcface, subcenter_arcface, proxynca, contrastive, multi_similarity",
          choices=LOSSES),
    Param("loss_args", dict, {}, "keywords for the loss, e.g. {margin = 0.2}; per loss: " +
          "; ".join(f"{k}: {', '.join(v)}" for k, v in LOSS_ARGS.items())),
    Param("distance", str, "cosine", "cosine (faiss inner product on normalised embeddings) or euclidean (L2); "
          "for the loss, the miner and the evaluation alike", choices=("cosine", "euclidean")),
    Param("normalize_embeddings", bool, True, "with distance = 'euclidean': L2 between normalised embeddings "
          "(pytorch-metric-learning's default), in the loss and the evaluation, or between raw ones"),
    Param("miner", str, "auto", "pair/triplet miner: auto (epshn_triplet: easy_semihard, multi_similarity: "
          "multi_similarity, others: none), none, easy_semihard, semihard, hard, multi_similarity", choices=MINERS),
    Param("loss_lr", float, 0.0, "learning rate of the loss's own parameters (ArcFace class weights, ProxyNCA "
          "proxies), a separate optimizer group; 0: lr", min=0.0),
    Param("freeze_bn", bool, False, "keep the backbone's batch norm as loaded: running statistics and affine "
          "parameters frozen"),
    Param("augment", bool, False, "random resized crop and horizontal flip for training (test: resize and centre "
          "crop)"),
    Param("scale", list, [0.5, 1.0], "random-resized-crop area range (with augment)", item_type=float,
          min=0.0, max=1.0),
    Param("hflip", float, 0.5, "horizontal flip probability (with augment)", min=0.0, max=1.0),
    Param("samples_per_class", int, 0, "m images of each class per batch, as pytorch-metric-learning's "
          "MPerClassSampler (0: plain shuffled batches, as in the seed)", min=0),
    Param("unseen_classes", int, 0, "K: also train a model without the last K classes and measure the precision "
          "drops (0: off)", min=0),
    Param("knn_k", list, [1, 5, 10], "k of the k-NN majority-vote accuracies (the largest is also how many "
          "neighbours of each test image are saved)", item_type=int, min=1, max=1000),
    *data_params("digits", "imagefolder", "cub200"),
    *TRAINING,
    epochs=10, batch_size=64, lr=0.01, img_size=32,
)


def _skip(p: dict[str, Any]) -> str | None:
    if p["loss"] in COSINE_ONLY and p["distance"] != "cosine":
        return f"{p['loss']} is defined on cosine similarity (distance = 'cosine' only)"
    return None


def _validate(p: dict[str, Any]) -> list[str]:
    problems = []
    allowed = LOSS_ARGS[p["loss"]]
    for key, value in p["loss_args"].items():
        if key not in allowed:
            problems.append(f"loss_args.{key}: not an argument of {p['loss']} (it takes {', '.join(allowed)})")
        elif not isinstance(value, (int, float, bool, str)):
            problems.append(f"loss_args.{key}: expected a number, bool or string, got {value!r}")
    if p["loss"] in OWN_PARAMETERS and p["miner"] not in ("auto", "none"):
        problems.append(f"miner {p['miner']!r}: {p['loss']} learns class weights or proxies and takes no miner")
    if p["samples_per_class"] == 1 or p["samples_per_class"] > p["batch_size"]:
        problems.append(f"samples_per_class = {p['samples_per_class']}: expected 0 (off) or 2 to batch_size "
                        f"({p['batch_size']})")
    if not p["knn_k"]:
        problems.append("knn_k: expected at least one k, e.g. [1, 5, 10]")
    if p["augment"] and (len(p["scale"]) != 2 or p["scale"][0] > p["scale"][1]):
        problems.append(f"scale: expected [low, high] with low <= high, got {p['scale']}")
    if p["dataset"] == "digits" and p["unseen_classes"] > 8:
        problems.append(f"unseen_classes = {p['unseen_classes']}: digits has 10 classes; the second model needs "
                        "at least 2 to learn from")
    return problems


def _preflight(p: dict[str, Any]) -> list[str]:
    problems = check_data(p)
    if not problems and p["dataset"] == "cub200":
        problems += _missing_cub_files(Path(p["data_dir"]).expanduser())
    if p["init_from"]:
        from expt.project import find_project

        runs_dir = find_project().runs_dir
        if not (runs_dir / p["init_from"]).is_dir() and not Path(p["init_from"]).expanduser().is_file():
            problems.append(f"init_from {p['init_from']!r}: no such run in {runs_dir} and no such weights file")
    return problems


def _missing_cub_files(root: Path) -> list[str]:
    from expt.core.recipes import DATA_LAYOUTS
    from expt.project import display_path

    if (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"
    for name in ("images.txt", "image_class_labels.txt", "classes.txt", "images"):
        if not (root / name).exists():
            return [f"CUB-200-2011 in {display_path(root)}: missing {name} (expected {DATA_LAYOUTS['cub200']})"]
    return []


@recipe("metric", PARAMS, metric="test_accuracy", goal="max", skip=_skip, validate=_validate,
        preflight=_preflight, columns=SUMMARY_COLUMNS)
def run(p: dict[str, Any], tracker: Tracker) -> None:
    """Deep metric learning: PML losses, faiss precision@1, the unseen-class protocol and precision drops."""
    import numpy as np

    from expt.core import data, training

    training.seed_everything(p["seed"])
    device = training.resolve_device(p["device"])
    tracker.log(f"device: {training.describe_device(device)}")
    splits = data.load_splits(p)
    classes = splits.train.classes
    unseen = p["unseen_classes"]
    if unseen and len(classes) - unseen < 2:
        raise UsageError(f"unseen_classes = {unseen} leaves {len(classes) - unseen} of the {len(classes)} classes "
                         f"to train the second model on; it needs at least 2")
    tracker.log(f"data: {p['dataset']}, {len(classes)} classes, {len(splits.train)} training and "
                f"{len(splits.test)} test images" + (f"; the last {unseen} classes unseen by the second model "
                                                      f"({', '.join(classes[-unseen:][:5])}{' ...' * (unseen > 5)})"
                                                      if unseen else ""))
    tracker.log_summary(classes=len(classes), train_images=len(splits.train), test_images=len(splits.test))
    setup = _Setup(p, splits, device)
    epochs = p["epochs"] * (2 if unseen else 1)
    everything = np.arange(len(splits.train))
    full = _train_phase(p, tracker, setup, everything, len(classes), phase=None, suffix="", progress=(0, epochs))
    _record_phase(p, tracker, setup, full, "all_classes", suffix="", seen=len(classes) - unseen)
    _save_neighbours(tracker, NEIGHBOURS, full.retrieval, splits, p, "all classes")
    if unseen:
        seen = np.flatnonzero(splits.train.labels < len(classes) - unseen)
        reduced = _train_phase(p, tracker, setup, seen, len(classes) - unseen, phase=REDUCED, suffix="2",
                               progress=(p["epochs"], epochs))
        _record_phase(p, tracker, setup, reduced, "limited_classes", suffix="2", seen=len(classes) - unseen)
        _save_neighbours(tracker, "neighbours2.json", reduced.retrieval, splits, p,
                         f"without the last {unseen} classes")
        _record_drops(tracker, classes, splits.test.labels, full.retrieval, reduced.retrieval, unseen)
    if full.fit.best is not None:
        tracker.log(f"Best metric: {full.fit.best} (epoch {full.fit.best_epoch})")


def resolved_miner(p: dict[str, Any]) -> str:
    return DEFAULT_MINER.get(p["loss"], "none") if p["miner"] == "auto" else p["miner"]


# -- data and embeddings --------------------------------------------------------------------------------


class _Setup:
    """What both phases share: transforms, normalisation and the images the evaluation embeds."""

    def __init__(self, p: dict[str, Any], splits: Any, device: Any):
        import timm.data

        from expt.core import data

        self.p, self.splits, self.device = p, splits, device
        pretrained_cfg = timm.models.get_pretrained_cfg(p["model"])
        config = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict()) if pretrained_cfg else {}
        mean, std = config.get("mean", data.IMAGENET_MEAN), config.get("std", data.IMAGENET_STD)
        interpolation = config.get("interpolation", "bilinear")
        self.normalizer = data.Normalizer(device, mean, std, channels_last=p["channels_last"])
        # the seed's test transform: resize and centre crop at the same size
        self.eval_transform = timm.data.create_transform(p["img_size"], is_training=False, use_prefetcher=True,
                                                         interpolation=interpolation, crop_pct=1.0)
        if p["augment"]:
            self.train_transform = timm.data.create_transform(
                p["img_size"], is_training=True, use_prefetcher=True, interpolation=interpolation,
                scale=tuple(p["scale"]), hflip=p["hflip"], color_jitter=None)
        else:
            self.train_transform = self.eval_transform
        self.index_images = _ImageSource(splits.train, self.eval_transform, p)
        self.query_images = _ImageSource(splits.test, self.eval_transform, p)


class _ImageSource:
    """uint8 batches of a split through the evaluation transform: kept in memory when they fit in
    CACHE_BYTES, decoded batch by batch otherwise (200k-image sets)."""

    def __init__(self, images: Any, transform: Any, p: dict[str, Any]):
        from expt.core import data

        self.images, self.transform, self.p = images, transform, p
        size = len(images) * 3 * p["img_size"] ** 2
        self.cache = data.tensor_cache(images, transform, p["workers"])[0] if size <= CACHE_BYTES else None

    def cached(self, indices: np.ndarray) -> tuple[Any, Any] | None:
        """``data.tensor_cache`` of these images (a subset) when they are in memory already."""
        import numpy as np
        import torch

        if self.cache is None:
            return None
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return self.cache[index], torch.from_numpy(self.images.labels[indices])

    def batches(self):
        import torch

        from expt.core import data

        size = self.p["eval_batch_size"]
        if self.cache is not None:
            for start in range(0, len(self.cache), size):
                yield self.cache[start:start + size]
            return
        loader = torch.utils.data.DataLoader(data.TransformedImages(self.images, self.transform), batch_size=size,
                                             sampler=[(i, 0) for i in range(len(self.images))],
                                             num_workers=self.p["workers"])
        for x, _ in loader:
            yield x


def embed(model: Any, source: _ImageSource, setup: _Setup) -> np.ndarray:
    """The model's embeddings of every image of ``source`` (float32, on the CPU)."""
    import numpy as np
    import torch

    from expt.core import training

    model.eval()
    parts = []
    with torch.no_grad(), training.autocast(setup.device, setup.p["amp"]):
        for x in source.batches():
            parts.append(model(setup.normalizer(x)).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, setup.p["embedding_dim"]), np.float32)


def class_balanced_order(labels: np.ndarray, batch_size: int, per_class: int, seed: int, epoch: int
                         ) -> list[np.ndarray]:
    """An epoch's batches made of groups of ``per_class`` images of one class, in seeded random order
    (a last batch of one image joins the one before it, as in ``data.epoch_order``)."""
    import numpy as np

    rng = np.random.default_rng([seed, epoch, per_class])
    groups = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        groups.extend(members[i:i + per_class] for i in range(0, len(members), per_class))
    order = np.concatenate([groups[g] for g in rng.permutation(len(groups))]) if groups else np.zeros(0, np.int64)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


# -- model, loss, miner -----------------------------------------------------------------------------------


def build_model(p: dict[str, Any], runs_dir: Path | None = None, log: Any = print) -> Any:
    """``Sequential(backbone, head)``: the timm backbone's pooled features, then the embedding head."""
    from collections import OrderedDict

    from torch import nn

    from expt.core import models

    backbone = models.create_model(p["model"], num_classes=0, pretrained=p["pretrained"] and not p["init_from"])
    if p["init_from"]:
        load_backbone(backbone, p["init_from"], runs_dir or Path("runs"), log)
    features = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # MobileNetV3: conv_head
    return nn.Sequential(OrderedDict(backbone=backbone, head=build_head(p["head"], features, p["embedding_dim"])))


def build_head(kind: str, features: int, dim: int) -> Any:
    from torch import nn

    if kind == "linear":
        return nn.Linear(features, dim)
    if kind == "bn1d":
        return nn.Sequential(nn.Linear(features, dim), nn.BatchNorm1d(dim))

    class SkipHead(nn.Module):
        """z = Wx; z + block(z), the block (BN, ReLU, linear) zero-initialised so training starts linear."""

        def __init__(self) -> None:
            super().__init__()
            self.project = nn.Linear(features, dim)
            self.block = nn.Sequential(nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, dim))
            nn.init.zeros_(self.block[2].weight)
            nn.init.zeros_(self.block[2].bias)

        def forward(self, x: Any) -> Any:
            z = self.project(x)
            return z + self.block(z)

    return SkipHead()


def load_backbone(backbone: Any, source: str, runs_dir: Path, log: Any = print) -> None:
    """Load the backbone tensors that fit from a run's checkpoint.pt (a finetune classifier or a metric run)
    or from a weights file; one clear line when there is nothing to load."""
    import torch

    from expt.core import runfiles

    run_dir = runs_dir / source
    if run_dir.is_dir():
        file = run_dir / runfiles.CHECKPOINT
        if not file.is_file():
            raise UsageError(f"init_from {source!r}: {file} does not exist (has that run trained an epoch?)")
    elif Path(source).expanduser().is_file():
        file = Path(source).expanduser()
    else:
        raise UsageError(f"init_from {source!r}: no such run in {runs_dir} and no such weights file")
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise UsageError(f"init_from {source!r}: {file} is not a PyTorch checkpoint ({type(error).__name__})") from None
    state = _state_dict(saved)
    if state is None:
        raise UsageError(f"init_from {source!r}: {file} holds no model weights")
    own = backbone.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    weights = [name for name, _ in backbone.named_parameters()]
    unfit = [name for name in weights if name not in fitting]
    if unfit:
        raise UsageError(f"init_from {source!r}: {len(unfit)} of the {len(weights)} weight tensors of {_architecture(backbone)} "
                         f"are missing from {file} or of another shape (first: {unfit[0]}); is it the same model?")
    backbone.load_state_dict(fitting, strict=False)
    log(f"init_from {source}: {len(fitting)} of the backbone's {len(own)} tensors loaded from {file}")


def _architecture(module: Any) -> str:
    return getattr(module, "default_cfg", {}).get("architecture") or type(module).__name__


def _state_dict(saved: Any) -> dict[str, Any] | None:
    """A model state dict from an expt checkpoint or a weights file: the ``backbone.`` prefix of a metric run
    removed, conditional batch norm (finetune ``cbn``) folded into plain weights."""
    import torch

    if isinstance(saved, dict) and isinstance(saved.get("state"), dict):
        saved = saved["state"].get("model")
    for key in ("state_dict", "model", "model_state"):
        if isinstance(saved, dict) and isinstance(saved.get(key), dict):
            saved = saved[key]
    if not isinstance(saved, dict) or not saved or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        return None
    state = {k.removeprefix("module."): v for k, v in saved.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    folded = {}
    for key, value in state.items():
        if ".parametrizations." in key:
            if key.endswith(".original"):
                layer, name = key.removesuffix(".original").split(".parametrizations.")
                delta = state.get(f"{layer}.parametrizations.{name}.0.delta")
                folded[f"{layer}.{name}"] = value + delta if delta is not None else value
            continue
        folded[key] = value
    return folded


def build_loss(p: dict[str, Any], n_classes: int) -> tuple[Any, Any]:
    """The pytorch-metric-learning loss and miner (or None) for ``p``, on the run's distance."""
    from pytorch_metric_learning import distances, losses, miners

    if p["distance"] == "cosine":
        distance = distances.CosineSimilarity()
    else:
        distance = distances.LpDistance(normalize_embeddings=p["normalize_embeddings"])
    args = dict(p["loss_args"])
    dim = p["embedding_dim"]
    name = p["loss"]
    if name == "epshn_triplet":
        loss = losses.TripletMarginLoss(distance=distance, **args)
    elif name == "arcface":
        loss = losses.ArcFaceLoss(num_classes=n_classes, embedding_size=dim, distance=distance, **args)
    elif name == "subcenter_arcface":
        loss = losses.SubCenterArcFaceLoss(num_classes=n_classes, embedding_size=dim, distance=distance, **args)
    elif name == "proxynca":
        loss = losses.ProxyNCALoss(num_classes=n_classes, embedding_size=dim, distance=distance, **args)
    elif name == "contrastive":
        margins = {"pos_margin": 1.0, "neg_margin": 0.0} if p["distance"] == "cosine" else {}
        loss = losses.ContrastiveLoss(distance=distance, **{**margins, **args})
    elif name == "multi_similarity":
        loss = losses.MultiSimilarityLoss(distance=distance, **args)
    else:
        raise UsageError(f"unknown loss {name!r}; losses: {', '.join(LOSSES)}")
    kind = resolved_miner(p)
    miner = {
        "none": lambda: None,
        "easy_semihard": lambda: miners.BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard",
                                                           distance=distance),
        "semihard": lambda: miners.TripletMarginMiner(margin=args.get("margin", 0.05), type_of_triplets="semihard",
                                                      distance=distance),
        "hard": lambda: miners.BatchHardMiner(distance=distance),
        "multi_similarity": lambda: miners.MultiSimilarityMiner(distance=distance),
    }[kind]()
    return loss, miner


# -- one phase: train, evaluate every epoch -------------------------------------------------------------


@dataclass
class _Phase:
    """A phase's outcome: the fit result and the final model's retrieval of every test image."""

    fit: Any
    retrieval: Retrieval


class _Progress:
    """The tracker as ``fit`` sees it in a two-phase run: both phases' epochs count as one progress."""

    def __init__(self, tracker: Tracker, offset: int, total: int):
        self._tracker, self._offset, self._total = tracker, offset, total

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)

    def log_progress(self, epoch: int, epochs: int, phase: str | None = None) -> None:
        self._tracker.log_progress(self._offset + epoch, self._total, phase)


def _train_phase(p: dict[str, Any], tracker: Tracker, setup: _Setup, indices: np.ndarray, n_classes: int, *,
                 phase: str | None, suffix: str, progress: tuple[int, int]) -> _Phase:
    """Train a model on the training images ``indices`` (of ``n_classes`` classes), evaluating every epoch."""
    import torch

    from expt.core import data, evaluate, models, training

    training.seed_everything(p["seed"])
    device = setup.device
    train = setup.splits.train.subset(indices)
    what = f"{n_classes} classes" + (f" [{phase}]" if phase else "")
    model = build_model(p, tracker.run_dir.parent, tracker.log)
    loss_fn, miner = build_loss(p, n_classes)
    backbone = model.backbone
    if p["freeze_bn"]:
        for layer in models.norm_layers(backbone):
            layer.weight.requires_grad_(False)
            layer.bias.requires_grad_(False)
    memory_format = torch.channels_last if p["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    loss_fn.to(device)
    total, trainable = models.count_parameters(model)
    loss_params = [q for q in loss_fn.parameters() if q.requires_grad]
    tracker.log(f"model {what}: {p['model']} + {p['head']} head -> {p['embedding_dim']}-d, {total:,} parameters "
                f"({trainable:,} trainable), loss {p['loss']} ({sum(q.numel() for q in loss_params):,} parameters), "
                f"miner {resolved_miner(p)}, {p['distance']}, {len(train)} training images")
    groups = [{"params": [q for q in model.parameters() if q.requires_grad]}]
    if loss_params:
        groups.append({"params": loss_params, "lr": p["loss_lr"] or p["lr"]})
    optimizer = training.create_optimizer(groups, p)
    order = None
    if p["samples_per_class"]:
        labels, size, m, seed = train.labels, p["batch_size"], p["samples_per_class"], p["seed"]
        order = lambda epoch: class_balanced_order(labels, size, m, seed, epoch)  # noqa: E731
    batches = data.Batches(train, setup.train_transform, batch_size=p["batch_size"], seed=p["seed"],
                           augment=p["augment"], workers=p["workers"], order=order,
                           cache=setup.index_images.cached(indices))
    scheduler = training.create_scheduler(optimizer, p, len(batches))
    scaler = training.grad_scaler(device, p["amp"])
    index_labels = setup.splits.train.labels
    test_labels = setup.splits.test.labels
    seen_classes = len(setup.splits.train.classes) - p["unseen_classes"]
    last: dict[str, Any] = {}

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int]:
        x, y = setup.normalizer(batch[0]), batch[1].to(device)
        with training.autocast(device, p["amp"]):
            embeddings = model(x)
        embeddings = embeddings.float()
        loss = loss_fn(embeddings, y, miner(embeddings, y)) if miner is not None else loss_fn(embeddings, y)
        training.optimizer_step(loss, optimizer, scaler)
        return loss.item(), len(x)

    def evaluate_model(epoch: int) -> dict[str, float]:
        index, queries = embed(model, setup.index_images, setup), embed(model, setup.query_images, setup)
        if p["distance"] == "euclidean" and p["normalize_embeddings"]:  # what the loss measured
            index, queries = evaluate.normalize(index), evaluate.normalize(queries)
        found = evaluate.retrieval(index, index_labels, queries, test_labels, distance=p["distance"],
                                   knn_k=p["knn_k"], keep=max(p["knn_k"]))
        last.update(epoch=epoch, retrieval=found)
        scores = found.scores()
        if p["unseen_classes"]:
            scores.update(split_accuracy(found.hits, test_labels, seen_classes))
        return scores

    def train_mode() -> None:
        if p["freeze_bn"]:
            models.set_norm_mode(backbone, False)

    result = training.fit(
        _Progress(tracker, *progress), model=model, optimizer=optimizer, epochs=p["epochs"], batches=batches.epoch,
        n_batches=len(batches), train_step=train_step, evaluate=evaluate_model, metric="test_accuracy", goal="max",
        seed=p["seed"], scheduler=scheduler, train_mode=train_mode, phase=phase, suffix=suffix,
        state={"scaler": scaler, "loss": loss_fn}, announce_best=False)
    if last.get("epoch") != p["epochs"] - 1:  # resumed after the phase had finished, or no epochs at all
        with torch.no_grad():
            scores = evaluate_model(p["epochs"] - 1)
        if not p["epochs"]:
            tracker.log_metrics(0, **{f"{k}{suffix}": v for k, v in scores.items()})
    return _Phase(result, last["retrieval"])


def split_accuracy(hits: np.ndarray, labels: np.ndarray, seen: int) -> dict[str, float]:
    """precision@1 (percent) over the test images of the first ``seen`` classes and over the others."""
    import numpy as np

    labels = np.asarray(labels)
    scores = {}
    for key, mask in (("seen_accuracy", labels < seen), ("unseen_accuracy", labels >= seen)):
        if mask.any():
            scores[key] = 100.0 * float(np.mean(np.asarray(hits)[mask]))
    return scores


# -- what a phase records ---------------------------------------------------------------------------------


def _summary_key(name: str, suffix: str) -> str:
    """``name`` with the phase suffix; an underscore first where the name ends in a digit (precision_at_1_2)."""
    return f"{name}_{suffix}" if suffix and name[-1].isdigit() else f"{name}{suffix}"


def _record_phase(p: dict[str, Any], tracker: Tracker, setup: _Setup, phase: _Phase, table: str, *, suffix: str,
                  seen: int) -> None:
    found = phase.retrieval
    splits = setup.splits
    scores = {"precision_at_1": found.precision_at_1, **{k: v for k, v in found.scores().items()
                                                          if k != "test_accuracy"}}
    if p["unseen_classes"]:
        scores.update(split_accuracy(found.hits, splits.test.labels, seen))
    last = phase.fit.last
    scores.update(train_loss=last.get("train_loss"), train_seconds=round(phase.fit.seconds, 2))
    tracker.log_summary(**{_summary_key(k, suffix): v for k, v in scores.items()})
    counts = splits.train.counts()
    trained = [int(c) if i < seen else 0 for i, c in enumerate(counts)] if suffix else None
    tracker.log_table(f"{table}_metrics", class_rows(splits.train.classes, splits.test.labels, found.hits, counts,
                                                     trained))
    tracker.log_table(f"{table}_classification_report",
                      classification_report(splits.test.labels, found.predicted, splits.train.classes))
    tracker.log(f"{'[' + REDUCED + '] ' if suffix else ''}precision@1 {found.precision_at_1:.2f}%, "
                f"mAP@R {_percent(found.map_at_r)}, R-precision {_percent(found.r_precision)}, " +
                ", ".join(f"{k}-NN vote {v:.2f}%" for k, v in found.knn_accuracy.items()))


def _percent(value: float | None, unit: str = "%") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def class_rows(classes: list[str], labels: np.ndarray, hits: np.ndarray, train_counts: Any,
               trained: Any = None) -> list[dict[str, Any]]:
    """The seed's per-class table: class, test samples, train samples (in the index), precision@1 (and, for
    the reduced model, the images it trained on)."""
    import numpy as np

    from expt.core import evaluate

    precision = evaluate.per_class_precision(hits, labels, len(classes))
    tests = np.bincount(np.asarray(labels), minlength=len(classes))
    rows = []
    for i, name in enumerate(classes):
        row = {"class": name, "test_samples": int(tests[i]), "train_samples": int(train_counts[i]),
               "precision_at_1": None if np.isnan(precision[i]) else round(float(precision[i]), 4)}
        if trained is not None:
            row["trained_on"] = int(trained[i])
        rows.append(row)
    return rows


def classification_report(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """scikit-learn's classification report of the 1-NN predictions, one row per class and per average."""
    from sklearn.metrics import classification_report as report

    data = report(labels, predicted, labels=list(range(len(classes))), target_names=[str(c) for c in classes],
                  output_dict=True, zero_division=0)
    rows = []
    for name, values in data.items():
        if isinstance(values, dict):
            rows.append({"class": name, "precision": round(values["precision"], 4), "recall": round(values["recall"], 4),
                         "f1_score": round(values["f1-score"], 4), "support": int(values["support"])})
        else:
            rows.append({"class": name, "precision": None, "recall": None, "f1_score": round(values, 4),
                         "support": int(len(labels))})
    return rows


def precision_drops(full: np.ndarray, reduced: np.ndarray, unseen: int) -> dict[str, float | None]:
    """Mean over classes of precision@1 (full model) minus precision@1 (model trained without the last
    ``unseen`` classes), in percentage points: over the unseen classes, all classes and the seen ones.
    Classes without test images (NaN) are left out."""
    import numpy as np

    difference = np.asarray(full, dtype=np.float64) - np.asarray(reduced, dtype=np.float64)
    seen = len(difference) - unseen
    drops = {}
    for key, part in (("precision_drop_unseen_classes", difference[seen:]),
                      ("precision_drop_all_classes", difference),
                      ("precision_drop_seen_classes", difference[:seen])):
        part = part[~np.isnan(part)]
        drops[key] = float(part.mean()) if len(part) else None
    return drops


def _record_drops(tracker: Tracker, classes: list[str], labels: np.ndarray, full: Retrieval, reduced: Retrieval,
                  unseen: int) -> None:
    from expt.core import evaluate

    with_all = evaluate.per_class_precision(full.hits, labels, len(classes))
    without = evaluate.per_class_precision(reduced.hits, labels, len(classes))
    seen = len(classes) - unseen

    def rows(indices: range) -> list[dict[str, Any]]:
        return [{"class": classes[i], "unseen": i >= seen, "p1_all_classes": _rounded(with_all[i]),
                 "p1_without_unseen": _rounded(without[i]), "drop": _rounded(with_all[i] - without[i])}
                for i in indices]

    tracker.log_table("comparison_unseen_classes_metrics", rows(range(seen, len(classes))))
    tracker.log_table("comparison_seen_classes_metrics", rows(range(len(classes))))
    drops = precision_drops(with_all, without, unseen)
    tracker.log_summary(**drops)
    tracker.log(f"precision@1 drops, full model minus the model without the last {unseen} classes: unseen classes "
                f"{_percent(drops['precision_drop_unseen_classes'], ' points')}, all classes "
                f"{_percent(drops['precision_drop_all_classes'], ' points')}, seen classes "
                f"{_percent(drops['precision_drop_seen_classes'], ' points')}")


def _rounded(value: float) -> float | None:
    import math

    return None if math.isnan(value) else round(float(value), 4)


# -- neighbours for the TUI -------------------------------------------------------------------------------


def _save_neighbours(tracker: Tracker, name: str, found: Retrieval, splits: Any, p: dict[str, Any],
                     model: str) -> None:
    """``<run>/<name>``: every test image's top-k training neighbours (indices into the training split, classes,
    distances), with thumbnails under samples/ for up to PICTURED_QUERIES test images and their nearest
    PICTURED_NEIGHBOURS neighbours. Plain JSON: the TUI reads it without torch."""
    import orjson

    train, test = splits.train, splits.test
    classes = train.classes
    pictured = pictured_queries(found.hits, test.labels, len(classes))
    queries = []
    for q in range(len(test)):
        shown = q in pictured
        neighbours = []
        for rank, (j, d) in enumerate(zip(found.indices[q].tolist(), found.distances[q].tolist())):
            neighbours.append({"train_index": j, "class": classes[train.labels[j]], "label": int(train.labels[j]),
                               "distance": round(d, 6), "source": train.names[j],
                               "image": _thumbnail(tracker, train, j, "train") if shown and rank < PICTURED_NEIGHBOURS
                               else ""})
        label = int(test.labels[q])
        queries.append({"test_index": q, "class": classes[label], "label": label, "source": test.names[q],
                        "predicted": classes[int(found.predicted[q])], "correct": bool(found.hits[q]),
                        "image": _thumbnail(tracker, test, q, "test") if shown else "", "neighbours": neighbours})
    document = {"distance": p["distance"], "k": int(found.indices.shape[1]), "model": model, "classes": classes,
                "train_images": len(train), "test_images": len(test), "queries": queries}
    path = tracker.path(name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)


def pictured_queries(hits: np.ndarray, labels: np.ndarray, n_classes: int, total: int = PICTURED_QUERIES) -> set[int]:
    """Up to ``total`` test images spread evenly over the classes, each class's mistakes first."""
    import numpy as np

    per_class = max(1, total // max(1, n_classes))
    chosen: set[int] = set()
    for label in range(n_classes):
        members = np.flatnonzero(np.asarray(labels) == label)
        ordered = sorted(members.tolist(), key=lambda i: (bool(hits[i]), i))
        chosen.update(ordered[:per_class])
    return chosen


def _thumbnail(tracker: Tracker, images: Any, index: int, split: str) -> str:
    """A thumbnail of image ``index`` under samples/<split>/ (PNG for small images, JPEG for photos)."""
    for suffix in (".png", ".jpg"):
        relative = f"samples/{split}/{index:05d}{suffix}"
        if (tracker.run_dir / relative).exists():
            return relative
    image = images.image(index).copy()
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    if max(image.size) <= 64:
        relative = f"samples/{split}/{index:05d}.png"
        image.save(tracker.path(relative))
    else:
        relative = f"samples/{split}/{index:05d}.jpg"
        image.save(tracker.path(relative), quality=90)
    return relative
