"""Compound scaling of an MBConv network declared as a stage table, and FixRes (seed 002).

The network is data: ``stages``, one table per row of the seed's "Selected Architecture"
table (``type`` conv | mbconv, ``kernel``, ``channels``, ``layers``, ``stride``,
``expand``, optional ``se``), built from timm's EfficientNet blocks (``ConvBnAct``,
``DepthwiseSeparableConv`` for t = 1, ``InvertedResidual`` for t > 1) and followed by
BatchNorm, global average pooling and the classifier.

Compound scaling multiplies depth by alpha^phi, width by beta^phi and the resolution by
gamma^phi with the seed's rules: the first and last stages keep their size, the second
keeps its layer count but may widen, channels and layers round to the nearest integer
(a stage's ``scale`` key overrides its rule). ``constrain = true`` makes the sweep a
grid search: points with alpha * beta^2 * gamma^2 off ``target`` by more than
``tolerance``, or any factor below 1, are skipped (and listed as such).

Preprocessing is the seed's: for training a random square crop covering a proportion
U(crop_min, crop_max) of the image (the largest square when the aspect ratio forbids
it, never padded), resized to the training resolution, a random flip, brightness and
saturation jitter; for testing a resize of the short side to ``k_image_test`` and a
centre crop. With ``fixres = true`` the run estimates sigma, the mean proportion of the
training crops, sets r = sigma * k_image_test / k_train and the test resolution
k_train / r (a multiple of 8), then fine-tunes the batch norms and the classifier on the
training set with the test preprocessing at that resolution (Touvron et al., 2019).
"""

from __future__ import annotations

import difflib
import math
import random
from typing import TYPE_CHECKING, Any, Callable

from expt.core.recipes import check_data, recipe
from expt.params import TRAINING, Param, data_params, params

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from expt.core.tracking import Tracker

# The seed's three hand-designed baselines; C is the selected one (and the default).
SEED_STAGES = [
    {"type": "conv", "kernel": 7, "channels": 12, "layers": 1, "stride": 2},
    {"type": "mbconv", "kernel": 3, "channels": 16, "layers": 1, "stride": 2, "expand": 1},
    {"type": "mbconv", "kernel": 5, "channels": 22, "layers": 1, "stride": 1, "expand": 6},
    {"type": "mbconv", "kernel": 3, "channels": 26, "layers": 2, "stride": 1, "expand": 6},
    {"type": "mbconv", "kernel": 3, "channels": 32, "layers": 1, "stride": 2, "expand": 6},
    {"type": "conv", "kernel": 1, "channels": 40, "layers": 1, "stride": 1},
]
STAGE_TYPES = ("conv", "mbconv")
SCALE_RULES = ("none", "width", "both")
ACTIVATIONS = ("silu", "relu", "relu6", "hard_swish")
_STAGE_KEYS = ("type", "kernel", "channels", "layers", "stride", "expand", "se", "scale")
_REQUIRED = ("type", "kernel", "channels", "layers", "stride")
SIGMA_STREAM = 2002  # the seed stream of the sigma estimate, apart from the training batches'

PARAMS = params(
    Param("stages", list, SEED_STAGES, "the baseline network, one table per stage: type (conv | mbconv), kernel, "
          "channels, layers, stride, expand (t, mbconv), optional se (squeeze-excite ratio of the block's input) "
          "and scale (none | width | both; default: none for the first and last stage, width for the second, "
          "both for the others). Default: the seed's selected table C", item_type=dict),
    Param("arch", str, "", "a name for the stage table, shown in compare (the seed's baselines A, B, C)"),
    Param("act", str, "silu", "activation of every block", choices=ACTIVATIONS),
    Param("alpha", float, 1.0, "depth factor: layers x alpha^phi", min=0.1, max=10.0),
    Param("beta", float, 1.0, "width factor: channels x beta^phi", min=0.1, max=10.0),
    Param("gamma", float, 1.0, "resolution factor: train_res and k_image_test x gamma^phi", min=0.1, max=10.0),
    Param("phi", float, 0.0, "compound coefficient (0: the baseline itself; FLOPs grow about 2^phi)",
          min=0.0, max=10.0),
    Param("constrain", bool, False, "grid search: only points with alpha * beta^2 * gamma^2 within tolerance of "
          "target and alpha, beta, gamma >= 1 become runs; the others are listed as skipped"),
    Param("target", float, 2.0, "the FLOPs factor alpha * beta^2 * gamma^2 aims at (with constrain)", min=1.0),
    Param("tolerance", float, 0.01, "how far alpha * beta^2 * gamma^2 may be from target (with constrain)", min=0.0),
    Param("train_res", int, 64, "training crop size k_train in pixels (before gamma^phi)", min=8, max=4096),
    Param("k_image_test", int, 72, "test images are resized so their short side is this (before gamma^phi), "
          "then centre-cropped to the training resolution", min=8, max=8192),
    Param("crop_min", float, 0.2, "smallest proportion of the image a training crop covers", min=0.01, max=1.0),
    Param("crop_max", float, 0.7, "largest proportion of the image a training crop covers", min=0.01, max=1.0),
    Param("hflip", float, 0.5, "horizontal flip probability in training", min=0.0, max=1.0),
    Param("brightness", float, 0.2, "brightness jitter: factor drawn from U(1 - b, 1 + b)", min=0.0, max=1.0),
    Param("saturation", float, 0.2, "saturation jitter: factor drawn from U(1 - s, 1 + s)", min=0.0, max=1.0),
    Param("fixres", bool, False, "after training, estimate sigma, raise the test resolution to k_train / r and "
          "fine-tune batch norm + classifier at the test preprocessing (FixRes)"),
    Param("fixres_sigma", str, "area", "sigma is the mean proportion of the image's area the training crops "
          "cover (area: the seed, 0.444 -> test at 2x) or of its side (side: the square root, Touvron et al.'s "
          "apparent-object-size ratio, about 0.66 -> 1.3x)", choices=("area", "side")),
    Param("fixres_epochs", int, 2, "epochs of the FixRes fine-tuning", min=0, max=10_000),
    Param("fixres_lr", float, 0.001, "peak learning rate of the FixRes fine-tuning", min=0.0),
    *data_params("digits", "imagefolder"),
    *TRAINING,
    drop=("img_size",),
    epochs=10, batch_size=32, opt="adam", lr=0.003, weight_decay=0.0,
)

# The summary keys of the seed's tables, shown first by `expt compare` (the grid: sorted by test_acc).
COLUMNS = ("test_loss", "test_acc", "flops_ratio", "ideal_ratio", "acc_before", "acc_after")


# -- the stage table ---------------------------------------------------------------------------------------


def stage_problems(stages: Any) -> list[str]:
    """One line per problem of a stage table (index, key, what is wrong)."""
    if not isinstance(stages, list) or not stages:
        return ["stages: expected a non-empty list of tables, e.g. [{type = \"conv\", kernel = 3, channels = 16, "
                "layers = 1, stride = 2}]"]
    problems = []
    for i, stage in enumerate(stages):
        where = f"stages[{i}]"
        if not isinstance(stage, dict):
            problems.append(f"{where}: expected a table, got {stage!r}")
            continue
        for key in stage:
            if key not in _STAGE_KEYS:
                close = difflib.get_close_matches(key, _STAGE_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{where}.{key}: unknown stage key{hint}; keys: {', '.join(_STAGE_KEYS)}")
        for key in _REQUIRED:
            if key not in stage:
                problems.append(f"{where}: missing {key!r}")
        kind = stage.get("type")
        if "type" in stage and kind not in STAGE_TYPES:
            problems.append(f"{where}.type: expected one of {', '.join(STAGE_TYPES)}, got {kind!r}")
        for key, low in (("kernel", 1), ("channels", 1), ("layers", 1)):
            if key in stage and not _is_int(stage[key], low):
                problems.append(f"{where}.{key}: expected an int >= {low}, got {stage[key]!r}")
        if _is_int(stage.get("kernel"), 1) and stage["kernel"] % 2 == 0:
            problems.append(f"{where}.kernel: expected an odd kernel size, got {stage['kernel']}")
        if "stride" in stage and stage["stride"] not in (1, 2) or isinstance(stage.get("stride"), bool):
            problems.append(f"{where}.stride: expected 1 or 2, got {stage['stride']!r}")
        if "expand" in stage:
            if kind == "conv":
                problems.append(f"{where}.expand: only mbconv stages have an expansion ratio")
            elif not _is_number(stage["expand"]) or stage["expand"] < 1:
                problems.append(f"{where}.expand: expected a number >= 1, got {stage['expand']!r}")
        elif kind == "mbconv":
            problems.append(f"{where}: missing 'expand' (t: 1 for a depthwise-separable block, 6 in the seed)")
        if "se" in stage:
            if kind == "conv":
                problems.append(f"{where}.se: only mbconv stages have squeeze-excite")
            elif not _is_number(stage["se"]) or not 0 < stage["se"] <= 1:
                problems.append(f"{where}.se: expected a ratio in (0, 1], got {stage['se']!r}")
        if "scale" in stage and stage["scale"] not in SCALE_RULES:
            problems.append(f"{where}.scale: expected one of {', '.join(SCALE_RULES)}, got {stage['scale']!r}")
    return problems


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def round_half_up(value: float) -> int:
    """The nearest integer, halves rounded up (Python's round() rounds them to even)."""
    return int(math.floor(value + 0.5))


def scale_rule(stages: list[dict[str, Any]], index: int) -> str:
    """The seed's rules: the first and last stage keep their size, the second only widens."""
    if "scale" in stages[index]:
        return stages[index]["scale"]
    if index in (0, len(stages) - 1):
        return "none"
    return "width" if index == 1 else "both"


def scale_stages(stages: list[dict[str, Any]], alpha: float, beta: float, phi: float) -> list[dict[str, Any]]:
    """The stage table with layers x alpha^phi and channels x beta^phi, by each stage's rule."""
    depth, width = alpha ** phi, beta ** phi
    scaled = []
    for i, stage in enumerate(stages):
        rule = scale_rule(stages, i)
        new = dict(stage)
        if rule in ("width", "both"):
            new["channels"] = max(1, round_half_up(stage["channels"] * width))
        if rule == "both":
            new["layers"] = max(1, round_half_up(stage["layers"] * depth))
        scaled.append(new)
    return scaled


def scaled_resolution(resolution: int, gamma: float, phi: float) -> int:
    return max(8, round_half_up(resolution * gamma ** phi))


def stage_rows(stages: list[dict[str, Any]], resolution: int) -> list[dict[str, Any]]:
    """The seed's architecture table: each stage with its input resolution."""
    rows = []
    for i, stage in enumerate(stages, start=1):
        kind = "Conv2D" if stage["type"] == "conv" else f"MBConv t={_compact(stage['expand'])}"
        rows.append({"stage": i, "layer": kind, "resolution": f"{resolution} x {resolution}",
                     "kernel": f"{stage['kernel']} x {stage['kernel']}", "channels": stage["channels"],
                     "layers": stage["layers"], "stride": stage["stride"], "se": stage.get("se", 0)})
        resolution = -(-resolution // stage["stride"])
    return rows


def _compact(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def build_model(stages: list[dict[str, Any]], num_classes: int, act: str = "silu", in_chans: int = 3
                ) -> torch.nn.Module:
    """The stage table as a network of timm's EfficientNet blocks."""
    from torch import nn

    class StageNet(nn.Module):
        """Stages of timm blocks, then BatchNorm, global average pooling and the classifier (the seed's head)."""

        def __init__(self) -> None:
            super().__init__()
            blocks, channels = [], in_chans
            for stage in stages:
                layers = []
                for layer in range(stage["layers"]):
                    stride = stage["stride"] if layer == 0 else 1
                    layers.append(_block(stage, channels, stride, act))
                    channels = stage["channels"]
                blocks.append(nn.Sequential(*layers))
            self.num_classes = num_classes
            self.num_features = channels
            self.blocks = nn.Sequential(*blocks)
            self.norm = nn.BatchNorm2d(channels)
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(channels, num_classes)

        def get_classifier(self) -> nn.Module:
            return self.classifier

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.blocks(x))

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            x = self.global_pool(x).flatten(1)
            return x if pre_logits else self.classifier(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.forward_head(self.forward_features(x))

    return StageNet()


def _block(stage: dict[str, Any], in_chs: int, stride: int, act: str) -> torch.nn.Module:
    from functools import partial

    from timm.layers import get_act_layer
    from timm.models._efficientnet_blocks import (ConvBnAct, DepthwiseSeparableConv, InvertedResidual,
                                                  SqueezeExcite)

    act_layer = get_act_layer(act)
    out_chs, kernel = stage["channels"], stage["kernel"]
    if stage["type"] == "conv":
        return ConvBnAct(in_chs, out_chs, kernel, stride=stride, act_layer=act_layer)
    expand = float(stage["expand"])
    # timm's EfficientNets size squeeze-excite from the block's input: rd = in_chs * se
    se_layer = partial(SqueezeExcite, rd_ratio=stage["se"] / expand) if stage.get("se") else None
    if expand == 1:
        return DepthwiseSeparableConv(in_chs, out_chs, dw_kernel_size=kernel, stride=stride, act_layer=act_layer,
                                      se_layer=se_layer)
    return InvertedResidual(in_chs, out_chs, dw_kernel_size=kernel, stride=stride, exp_ratio=expand,
                            act_layer=act_layer, se_layer=se_layer)


def count_flops(model: torch.nn.Module, resolution: int, in_chans: int = 3) -> int:
    """FLOPs of one image at ``resolution`` (torch's FlopCounterMode: 2 per multiply-add), counted on a
    copy on the meta device: shapes only, no arithmetic."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shadow = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        shadow(torch.zeros(1, in_chans, resolution, resolution, device="meta"))
    return int(counter.get_total_flops())


# -- preprocessing -----------------------------------------------------------------------------------------


def square_crop(width: int, height: int, proportion: float) -> tuple[float, float]:
    """The side of a square covering ``proportion`` of the image's area, or the largest square when the
    aspect ratio does not allow it; and the proportion it really covers."""
    side = min(math.sqrt(proportion * width * height), float(min(width, height)))
    return side, side * side / (width * height)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class TrainTransform:
    """The seed's training preprocessing, PIL image -> uint8 CHW tensor.

    Its randomness comes from ``random`` (seeded per image by ``data.Batches``), so every
    crop is a function of (seed, epoch, batch, position) and a resumed run sees the same ones.
    """

    def __init__(self, size: int, crop_min: float, crop_max: float, hflip: float, brightness: float,
                 saturation: float):
        self.size, self.crop_min, self.crop_max = size, crop_min, crop_max
        self.hflip, self.brightness, self.saturation = hflip, brightness, saturation

    def crop(self, width: int, height: int, rng: Any = random) -> tuple[tuple[float, ...], float]:
        """A crop box (left, top, right, bottom) in pixels and the proportion of the image it covers."""
        side, proportion = square_crop(width, height, rng.uniform(self.crop_min, self.crop_max))
        left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
        return (left, top, left + side, top + side), proportion

    def __call__(self, image: Image.Image) -> torch.Tensor:
        from PIL import Image, ImageEnhance

        box, _ = self.crop(*image.size)
        out = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        if random.random() < self.hflip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.brightness:
            out = ImageEnhance.Brightness(out).enhance(random.uniform(1 - self.brightness, 1 + self.brightness))
        if self.saturation:
            out = ImageEnhance.Color(out).enhance(random.uniform(1 - self.saturation, 1 + self.saturation))
        return _to_tensor(out)


class EvalTransform:
    """Resize so the short side is ``resize``, then a centre crop of ``size`` (done in one resampling)."""

    def __init__(self, size: int, resize: int):
        self.size, self.resize = size, resize

    def __call__(self, image: Image.Image) -> torch.Tensor:
        from PIL import Image

        width, height = image.size
        side = min(width, height) * self.size / self.resize
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
        return _to_tensor(image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))


def image_size(images: Any, index: int) -> tuple[int, int]:
    """(width, height) without decoding the pixels of an image on disk."""
    from PIL import Image

    item = images.items[index]
    if isinstance(item, Image.Image):
        return item.size
    with Image.open(item) as image:
        return image.size


def estimate_sigma(images: Any, transform: TrainTransform, seed: int, of: str = "area") -> float:
    """The mean proportion of the image's area (or side) the training crops cover, over the whole training set."""
    from expt.core.data import batch_seed

    total = 0.0
    for i in range(len(images)):
        rng = random.Random(batch_seed(seed, SIGMA_STREAM, i))
        proportion = transform.crop(*image_size(images, i), rng)[1]
        total += proportion if of == "area" else math.sqrt(proportion)
    return total / max(1, len(images))


def fixres_resolution(k_train: int, r: float) -> int:
    """k_train / r rounded to a multiple of 8 (the seed: 64 / (0.444 * 72 / 64) -> 128)."""
    return max(8, 8 * round_half_up(k_train / r / 8))


# -- the recipe --------------------------------------------------------------------------------------------


def constraint(p: dict[str, Any]) -> float:
    return p["alpha"] * p["beta"] ** 2 * p["gamma"] ** 2


def _skip(p: dict[str, Any]) -> str | None:
    if not p["constrain"]:
        return None
    low = [k for k in ("alpha", "beta", "gamma") if p[k] < 1]
    if low:
        return f"{' and '.join(low)} below 1"
    value = constraint(p)
    if abs(value - p["target"]) > p["tolerance"]:
        return f"alpha*beta^2*gamma^2 = {value:.3f}, not within {p['tolerance']:g} of {p['target']:g}"
    return None


def _validate(p: dict[str, Any]) -> list[str]:
    problems = stage_problems(p["stages"])
    if p["crop_min"] > p["crop_max"]:
        problems.append(f"crop_min ({p['crop_min']:g}) is above crop_max ({p['crop_max']:g})")
    if p["k_image_test"] < p["train_res"]:
        problems.append(f"k_image_test ({p['k_image_test']}) is below train_res ({p['train_res']}): the test "
                        f"centre crop must fit in the resized image")
    if not problems:
        shrink = math.prod(s["stride"] for s in p["stages"])
        if p["train_res"] < shrink:
            problems.append(f"train_res ({p['train_res']}) is below the network's total stride ({shrink})")
    return problems


@recipe("scaling", PARAMS, metric="top1", goal="max", skip=_skip, validate=_validate, preflight=check_data,
        columns=COLUMNS, sort="test_acc")
def run(p: dict[str, Any], tracker: Tracker) -> None:
    """MBConv network from a stage table, compound scaling (alpha, beta, gamma, phi) and FixRes."""
    import torch

    from expt.core import data, evaluate, models, training

    training.seed_everything(p["seed"])
    device = training.resolve_device(p["device"])
    tracker.log(f"device: {training.describe_device(device)}")
    splits = data.load_splits(p)
    train, test = splits.train, splits.test
    classes = train.classes
    tracker.log(f"data: {p['dataset']}, {len(classes)} classes, {len(train)} training and {len(test)} test images")

    stages = scale_stages(p["stages"], p["alpha"], p["beta"], p["phi"])
    k_train = scaled_resolution(p["train_res"], p["gamma"], p["phi"])
    k_image = max(k_train, scaled_resolution(p["k_image_test"], p["gamma"], p["phi"]))
    model = build_model(stages, len(classes), p["act"])
    total, _ = models.count_parameters(model)
    flops = count_flops(model, k_train)
    base_flops = count_flops(build_model(p["stages"], len(classes), p["act"]), p["train_res"])
    tracker.log_table("stages", stage_rows(stages, k_train))
    tracker.log_summary(params=total, flops=flops, flops_ratio=flops / base_flops, ideal_ratio=2.0 ** p["phi"],
                        constraint=constraint(p), resolution=k_train, k_image_test=k_image, classes=len(classes),
                        train_images=len(train), test_images=len(test))
    tracker.log(f"model: {len(stages)} stages, {total:,} parameters, {flops / 1e6:.2f} MFLOPs at {k_train} px "
                f"({flops / base_flops:.2f}x the baseline; 2^phi = {2.0 ** p['phi']:.2f})")

    memory_format = torch.channels_last if p["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    normalizer = data.Normalizer(device, channels_last=p["channels_last"])

    def forward(x: torch.Tensor) -> torch.Tensor:
        with training.autocast(device, p["amp"]):
            return model(x)

    def scorer(images: tuple[torch.Tensor, torch.Tensor]) -> Callable[[int], dict[str, float]]:
        def evaluate_epoch(epoch: int = 0) -> dict[str, float]:
            model.eval()  # also outside fit: after a resume the model starts in training mode
            logits = evaluate.predict(model, images[0], normalizer, p["eval_batch_size"], forward)
            return evaluate.classification_scores(logits, images[1])
        return evaluate_epoch

    criterion = torch.nn.CrossEntropyLoss()

    def trainer(optimizer: torch.optim.Optimizer, scaler: Any) -> Callable[[Any], tuple[float, int]]:
        def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int]:
            x, y = normalizer(batch[0]), batch[1].to(device)
            loss = criterion(forward(x), y)
            training.optimizer_step(loss, optimizer, scaler)
            return loss.item(), len(x)
        return train_step

    crop = TrainTransform(k_train, p["crop_min"], p["crop_max"], p["hflip"], p["brightness"], p["saturation"])
    batches = data.Batches(train, crop, batch_size=p["batch_size"], seed=p["seed"], augment=True,
                           workers=p["workers"])
    test_set = data.tensor_cache(test, EvalTransform(k_train, k_image), p["workers"])
    optimizer = training.create_optimizer(list(model.parameters()), p)
    scaler = training.grad_scaler(device, p["amp"])
    result = training.fit(
        tracker, model=model, optimizer=optimizer, epochs=p["epochs"], batches=batches.epoch,
        n_batches=len(batches), train_step=trainer(optimizer, scaler), evaluate=scorer(test_set), metric="top1",
        seed=p["seed"], scheduler=training.create_scheduler(optimizer, p, len(batches)),
        state={"scaler": scaler}, announce_best=False)
    last = result.last if result.last else scorer(test_set)()
    tracker.log_summary(best_top1=result.best, best_epoch=result.best_epoch, test_loss=last["eval_loss"],
                        test_acc=last["top1"], train_loss=last.get("train_loss"),
                        train_seconds=round(result.seconds, 2))
    if p["fixres"]:
        _fixres(p, tracker, model, train, test, crop, k_train, k_image, last, scorer, trainer, device)
    if result.best is not None:
        tracker.log(f"Best metric: {result.best} (epoch {result.best_epoch})")


def _fixres(p: dict[str, Any], tracker: Tracker, model: Any, train: Any, test: Any, crop: TrainTransform,
            k_train: int, k_image: int, before: dict[str, float], scorer: Callable, trainer: Callable,
            device: Any) -> None:
    """Test at k_train / r after fine-tuning batch norm and the classifier at the test preprocessing."""
    from expt.core import data, models, training

    sigma = estimate_sigma(train, crop, p["seed"], p["fixres_sigma"])
    r = sigma * k_image / k_train
    resolution = fixres_resolution(k_train, r)
    transform = EvalTransform(resolution, max(resolution, round_half_up(k_image * resolution / k_train)))
    tracker.log(f"FixRes: sigma ({p['fixres_sigma']}) {sigma:.4f}, r = {sigma:.4f} * {k_image} / {k_train} = {r:.4f}, "
                f"test resolution {k_train} / r -> {resolution} px")
    test_set = data.tensor_cache(test, transform, p["workers"])
    untuned = scorer(test_set)()
    trainable = [q for layer in models.norm_layers(model) for q in (layer.weight, layer.bias)]
    models.set_trainable(model, trainable + models.classifier_parameters(model))
    batches = data.Batches(train, transform, batch_size=p["batch_size"], seed=p["seed"], augment=False,
                           workers=p["workers"])
    settings = {**p, "lr": p["fixres_lr"], "warmup_epochs": 0}
    optimizer = training.create_optimizer([q for q in model.parameters() if q.requires_grad], settings)
    scaler = training.grad_scaler(device, p["amp"])
    result = training.fit(
        tracker, model=model, optimizer=optimizer, epochs=p["fixres_epochs"], batches=batches.epoch,
        n_batches=len(batches), train_step=trainer(optimizer, scaler), evaluate=scorer(test_set), metric="top1",
        seed=p["seed"], scheduler=training.create_scheduler(optimizer, settings, len(batches), p["fixres_epochs"]),
        phase="fixres", suffix="_fixres", state={"scaler": scaler}, announce_best=False)
    after = result.last if result.last else untuned
    tracker.log_table("fixres", [
        {"model": "trained without fine tuning", "resolution": k_train, "test_loss": before["eval_loss"],
         "test_acc": before["top1"]},
        {"model": "at the FixRes resolution, without fine tuning", "resolution": resolution,
         "test_loss": untuned["eval_loss"], "test_acc": untuned["top1"]},
        {"model": "trained with fine tuning", "resolution": resolution, "test_loss": after["eval_loss"],
         "test_acc": after["top1"]},
    ])
    tracker.log_summary(sigma=sigma, r=r, test_resolution=resolution, acc_before=before["top1"],
                        acc_after=after["top1"], test_loss_before=before["eval_loss"],
                        test_loss_after=after["eval_loss"], acc_untuned=untuned["top1"],
                        test_loss_untuned=untuned["eval_loss"])
    tracker.log(f"FixRes: test accuracy {before['top1']:.2f}% at {k_train} px -> {after['top1']:.2f}% at "
                f"{resolution} px after fine-tuning ({untuned['top1']:.2f}% before it)")
