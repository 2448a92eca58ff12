"""Few-shot fine-tuning of timm models (seed 000: conditional batch norm vs end-to-end).

Modes: ``e2e`` trains every parameter; ``fc`` the classifier only; ``bn`` the batch-norm
affine parameters and the classifier; ``cbn`` conditional batch norm,
``y = (w + wd) * norm(x) + (b + bd)`` with zero-initialised ``wd``, ``bd`` and the
classifier trained; ``knn`` trains nothing and classifies the frozen backbone's
pooled features by nearest class centroid (and reports 1-NN).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from expt.core.recipes import check_data, recipe
from expt.modelnames import check_timm_model
from expt.params import TRAINING, Param, data_params, params

if TYPE_CHECKING:
    from expt.core.tracking import Tracker

MODES = ("e2e", "fc", "cbn", "bn", "knn")

PARAMS = params(
    Param("model", str, "efficientnet_lite0", "any timm model name", validator=check_timm_model),
    Param("pretrained", bool, True, "start from pretrained weights (efficientnet_lite0: shipped offline; "
          "others: timm's hub download, needs a network)"),
    Param("checkpoint", str, "", "a local weights file to start from (overrides pretrained)"),
    Param("mode", str, "e2e", "what trains: e2e (all), fc (classifier), bn (BN affine + classifier), "
          "cbn (conditional BN deltas + classifier; with weight_decay = 0 it trains as bn does), knn (nothing: "
          "nearest centroid on frozen features)",
          choices=MODES),
    Param("shots", int, 0, "training images per class, sampled with the seed (0: all)", min=0),
    Param("bn_train", bool, False, "in fc, bn and cbn modes, BN layers normalise with the batch's statistics "
          "(true) or keep the pretrained running statistics (false, the default: with 1-10 shots batch statistics "
          "cost 25-40 points on digits, see docs/architecture.md); e2e always uses batch statistics"),
    Param("augment", (bool, str), False, "random augmentation: false, true (random resized crop, flip, "
          "colour jitter), or a timm auto-augment string such as 'rand-m9-mstd0.5'"),
    Param("scale", list, [0.08, 1.0], "random-resized-crop area range (with augment)", item_type=float,
          min=0.0, max=1.0),
    Param("hflip", float, 0.5, "horizontal flip probability (with augment)", min=0.0, max=1.0),
    Param("color_jitter", float, 0.4, "colour jitter strength (with augment)", min=0.0),
    Param("mixup", float, 0.0, "mixup alpha (0: off)", min=0.0),
    Param("cutmix", float, 0.0, "cutmix alpha (0: off)", min=0.0),
    Param("smoothing", float, 0.0, "label smoothing", min=0.0, max=1.0),
    Param("drop_rate", float, 0.0, "dropout before the classifier", min=0.0, max=1.0),
    Param("download", bool, False, "download oxford_pets / flowers102 into data_dir (needs a network)"),
    *data_params("digits", "imagefolder", "oxford_pets", "flowers102"),
    *TRAINING,
    epochs=15, batch_size=16, lr=0.01,
)


def _validate(p: dict[str, Any]) -> list[str]:
    problems = []
    if p["scale"] and (len(p["scale"]) != 2 or p["scale"][0] > p["scale"][1]):
        problems.append(f"scale: expected [low, high] with low <= high, got {p['scale']}")
    if p["mode"] == "knn" and (p["mixup"] or p["cutmix"]):
        problems.append("mixup and cutmix need training; mode 'knn' trains nothing")
    return problems


@recipe("finetune", PARAMS, metric="top1", goal="max", validate=_validate, preflight=check_data)
def run(p: dict[str, Any], tracker: Tracker) -> None:
    """Few-shot fine-tuning of a timm model: e2e, fc, bn, cbn or knn."""
    import timm.data
    import torch

    from expt.core import data, evaluate, models, training

    training.seed_everything(p["seed"])
    device = training.resolve_device(p["device"])
    tracker.log(f"device: {training.describe_device(device)}")
    splits = data.load_splits(p)
    train = splits.train
    if p["shots"]:
        train = train.subset(data.few_shot(train, p["shots"], p["seed"]))
    train = train.in_memory()
    save_samples(train, tracker)
    classes = train.classes
    tracker.log(f"data: {p['dataset']}, {len(classes)} classes, {len(train)} training and "
                f"{len(splits.test)} test images")

    model = models.create_model(p["model"], num_classes=len(classes), pretrained=p["pretrained"],
                                checkpoint=p["checkpoint"], drop_rate=p["drop_rate"])
    config = timm.data.resolve_data_config({}, model=model)
    mean, std, interpolation = config["mean"], config["std"], config["interpolation"]
    eval_transform = timm.data.create_transform(p["img_size"], is_training=False, use_prefetcher=True,
                                                interpolation=interpolation, crop_pct=config["crop_pct"])
    trainable = _trainable_parameters(model, p["mode"])
    models.set_trainable(model, trainable)
    total, n_trainable = models.count_parameters(model)
    tracker.log_summary(total_params=total, trainable_params=n_trainable, classes=len(classes),
                        train_images=len(train), test_images=len(splits.test))
    tracker.log(f"model: {p['model']}, {total:,} parameters, {n_trainable:,} trainable ({p['mode']})")

    memory_format = torch.channels_last if p["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    normalizer = data.Normalizer(device, mean, std, channels_last=p["channels_last"])
    test_x, test_y = data.tensor_cache(splits.test, eval_transform, p["workers"])

    def forward(x: torch.Tensor) -> torch.Tensor:
        with training.autocast(device, p["amp"]):
            return model(x)

    if p["mode"] == "knn":
        _nearest_centroid(p, tracker, model, train, eval_transform, normalizer, test_x, test_y, device)
        return

    augment = p["augment"]
    if augment:
        train_transform = timm.data.create_transform(
            p["img_size"], is_training=True, use_prefetcher=True, interpolation=interpolation,
            scale=tuple(p["scale"]), hflip=p["hflip"], color_jitter=p["color_jitter"],
            auto_augment=augment if isinstance(augment, str) else None)
    else:
        train_transform = eval_transform
    batches = data.Batches(train, train_transform, batch_size=p["batch_size"], seed=p["seed"],
                           augment=bool(augment), workers=p["workers"])
    optimizer = training.create_optimizer([q for q in model.parameters() if q.requires_grad], p)
    scheduler = training.create_scheduler(optimizer, p, len(batches))
    scaler = training.grad_scaler(device, p["amp"])
    mixup = None
    if p["mixup"] or p["cutmix"]:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=p["mixup"], cutmix_alpha=p["cutmix"], label_smoothing=p["smoothing"],
                      num_classes=len(classes))
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy

        criterion = SoftTargetCrossEntropy()
    else:
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=p["smoothing"])
    batch_statistics = p["mode"] == "e2e" or p["bn_train"]

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int]:
        x, y = normalizer(batch[0]), batch[1].to(device)
        if mixup is not None and len(x) % 2 == 0:
            x, y = mixup(x, y)
        elif mixup is not None:
            y = torch.nn.functional.one_hot(y, len(classes)).float()
        loss = criterion(forward(x), y)
        training.optimizer_step(loss, optimizer, scaler)
        return loss.item(), len(x)

    def evaluate_epoch(epoch: int) -> dict[str, float]:
        logits = evaluate.predict(model, test_x, normalizer, p["eval_batch_size"], forward)
        return evaluate.classification_scores(logits, test_y)

    result = training.fit(
        tracker, model=model, optimizer=optimizer, epochs=p["epochs"], batches=batches.epoch,
        n_batches=len(batches), train_step=train_step, evaluate=evaluate_epoch, metric="top1", goal="max",
        seed=p["seed"], scheduler=scheduler, train_mode=lambda: models.set_norm_mode(model, batch_statistics),
        state={"scaler": scaler})
    last = result.last
    tracker.log_summary(best_top1=result.best, best_epoch=result.best_epoch, final_top1=last.get("top1"),
                        top5=last.get("top5"), train_loss=last.get("train_loss"), eval_loss=last.get("eval_loss"),
                        train_seconds=round(result.seconds, 2))


def _trainable_parameters(model: Any, mode: str) -> list[Any] | None:
    from expt.core import models

    if mode == "e2e":
        return None
    head = models.classifier_parameters(model)
    if mode == "fc":
        return head
    if mode == "bn":
        return [q for layer in models.norm_layers(model) for q in (layer.weight, layer.bias)] + head
    if mode == "cbn":
        return models.add_conditional_batchnorm(model) + head
    return []  # knn


def _nearest_centroid(p: dict[str, Any], tracker: Tracker, model: Any, train: Any, transform: Any,
                      normalizer: Any, test_x: Any, test_y: Any, device: Any) -> None:
    import numpy as np

    from expt.core import data, evaluate

    model.eval()

    def features(x: Any) -> Any:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    train_x, train_y = data.tensor_cache(train, transform, p["workers"])
    train_f = evaluate.predict(model, train_x, normalizer, p["eval_batch_size"], features).numpy()
    test_f = evaluate.predict(model, test_x, normalizer, p["eval_batch_size"], features).numpy()
    centroid = evaluate.nearest_centroid_accuracy(train_f, train_y.numpy(), test_f, test_y.numpy(),
                                                  len(train.classes))
    _, nearest = evaluate.search(train_f, test_f, k=1, distance="cosine")
    one_nn = 100.0 * float(np.mean(train_y.numpy()[nearest[:, 0]] == test_y.numpy()))
    tracker.log_metrics(0, top1=centroid, nn1_top1=one_nn)
    tracker.log_summary(best_top1=centroid, best_epoch=0, final_top1=centroid, nn1_top1=one_nn)
    tracker.log(f"nearest centroid top-1 {centroid:.2f}%, 1-NN top-1 {one_nn:.2f}%")
    tracker.log(f"Best metric: {centroid} (epoch 0)")


def save_samples(images: Any, tracker: Tracker, thumbnail: int = 256, pictures_per_class: int = 32) -> None:
    """Save the training selection as ``tables/samples.json`` (every image: class, source) and a PNG of
    the first ``pictures_per_class`` images of each class under ``samples/`` (for the sample browser)."""
    rows = []
    pictured: dict[int, int] = {}
    for i in range(len(images)):
        label = int(images.labels[i])
        file = ""
        if pictured.get(label, 0) < pictures_per_class:
            pictured[label] = pictured.get(label, 0) + 1
            file = f"samples/{label:03d}_{i:05d}.png"
            image = images.image(i).copy()
            image.thumbnail((thumbnail, thumbnail))
            image.save(tracker.path(file))
        rows.append({"class": images.classes[label], "label": label, "source": images.names[i], "file": file})
    tracker.log_table("samples", rows)
