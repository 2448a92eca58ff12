"""Data sets, few-shot sampling, and the batches the training loops consume.

Images stay PIL images in memory (small sets) or file paths (large ones). Transforms
come from timm in "prefetcher" form (uint8 tensors, no normalisation); a batch is
normalised on its device by ``Normalizer``. Without random augmentation the
transformed images are computed once and kept as one uint8 tensor.

Every random choice of a training batch (order, augmentation) is a function of
(seed, epoch, batch index), so a run stopped mid-epoch resumes exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from expt.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Images:
    """A labelled image collection: PIL images in memory, or paths decoded on use."""

    items: list[Any]
    labels: np.ndarray
    classes: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> Image.Image:
        item = self.items[index]
        if isinstance(item, Image.Image):
            return item
        with Image.open(item) as img:
            return img.convert("RGB")

    def subset(self, indices: Sequence[int] | np.ndarray) -> Images:
        indices = [int(i) for i in indices]
        return Images([self.items[i] for i in indices], self.labels[indices], self.classes,
                      [self.names[i] for i in indices])

    def in_memory(self) -> Images:
        return Images([self.image(i) for i in range(len(self))], self.labels, self.classes, self.names)

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


@dataclass
class Splits:
    train: Images
    test: Images


def load_splits(params: dict[str, Any]) -> Splits:
    """The train and test splits of ``params['dataset']``."""
    dataset = params["dataset"]
    loader = _LOADERS.get(dataset)
    if loader is None:
        raise UsageError(f"unknown dataset {dataset!r}; data sets: {', '.join(_LOADERS)}")
    return loader(params)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with ``test_fraction`` of each class in test (at least one where possible)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test_fraction))
        if test_fraction > 0 and len(members) > 1:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def few_shot(images: Images, shots: int, seed: int) -> np.ndarray:
    """``shots`` indices per class drawn with ``seed``; a class with fewer images is an error naming it."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label, name in enumerate(images.classes):
        members = np.flatnonzero(images.labels == label)
        if len(members) < shots:
            raise UsageError(f"class {name!r} has {len(members)} training images, fewer than shots = {shots}")
        chosen.extend(rng.choice(members, size=shots, replace=False))
    return np.sort(np.array(chosen, dtype=np.int64))


# -- data sets -----------------------------------------------------------------------------------------


def _digits(params: dict[str, Any]) -> Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [Image.fromarray(p).convert("RGB") for p in pixels]
    labels = digits.target.astype(np.int64)
    everything = Images(images, labels, [str(d) for d in range(10)], [f"digits/{i}" for i in range(len(images))])
    train, test = stratified_split(labels, params.get("test_fraction", 0.2), params.get("split_seed", 0))
    return Splits(everything.subset(train), everything.subset(test))


def _folder_images(root: Path, classes: list[str] | None = None) -> Images:
    names = classes or sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise UsageError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    items, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        items.extend(files)
        labels.extend([label] * len(files))
    if not items:
        raise UsageError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return Images(items, np.array(labels, dtype=np.int64), names, [str(p.relative_to(root)) for p in items])


def require_dir(params: dict[str, Any], what: str) -> Path:
    data_dir = params.get("data_dir") or ""
    if not data_dir:
        raise UsageError(f"dataset {params['dataset']!r} needs data_dir = \"PATH\" ({what})")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UsageError(f"data_dir {str(path)!r}: no such folder ({what})")
    return path


def _image_folder(params: dict[str, Any]) -> Splits:
    root = require_dir(params, "a folder of class sub-folders, or train/ and val/ folders of them")
    for train_name, test_name in (("train", "val"), ("train", "test")):
        if (root / train_name).is_dir() and (root / test_name).is_dir():
            train = _folder_images(root / train_name)
            return Splits(train, _folder_images(root / test_name, train.classes))
    everything = _folder_images(root)
    fraction = params.get("val_fraction", params.get("test_fraction", 0.2))
    train, test = stratified_split(everything.labels, fraction, params.get("split_seed", 0))
    return Splits(everything.subset(train), everything.subset(test))


def _torchvision_set(params: dict[str, Any], name: str) -> Splits:
    import torchvision.datasets as tvd

    root = Path(params.get("data_dir") or "data").expanduser()
    download = bool(params.get("download", False))
    where = {"oxford_pets": "oxford-iiit-pet/images and oxford-iiit-pet/annotations",
             "flowers102": "flowers-102/jpg, imagelabels.mat and setid.mat"}[name]
    try:
        if name == "oxford_pets":
            train = tvd.OxfordIIITPet(root, split="trainval", download=download)
            test = tvd.OxfordIIITPet(root, split="test", download=download)
            pairs = [(train._images, train._labels), (test._images, test._labels)]
            classes = list(train.classes)
        else:
            train = tvd.Flowers102(root, split="train", download=download)
            test = tvd.Flowers102(root, split="test", download=download)
            pairs = [(train._image_files, train._labels), (test._image_files, test._labels)]
            classes = [str(c) for c in getattr(train, "classes", range(102))]
    except RuntimeError as error:
        raise UsageError(f"dataset {name!r} is not in {root} (expected {where}; set data_dir, "
                         f"or download = true on a machine with a network): {error}") from None
    except OSError as error:
        raise UsageError(f"dataset {name!r}: download failed ({error}); put the files in {root}/{where}") from None
    sets = [Images(list(paths), np.array(labels, dtype=np.int64), classes, [str(Path(p).name) for p in paths])
            for paths, labels in pairs]
    return Splits(*sets)


def _cub200(params: dict[str, Any]) -> Splits:
    root = require_dir(params, "the CUB_200_2011 release folder")
    if (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"
    needed = ("images.txt", "image_class_labels.txt", "classes.txt", "images")
    for name in needed:
        if not (root / name).exists():
            raise UsageError(f"CUB-200-2011 in {root}: missing {name} (the release has {', '.join(needed)})")

    def table(name: str) -> dict[int, str]:
        rows = (line.split(maxsplit=1) for line in (root / name).read_text().splitlines() if line.strip())
        return {int(key): value.strip() for key, value in rows}

    paths, labels, classes = table("images.txt"), table("image_class_labels.txt"), table("classes.txt")
    class_ids = sorted(classes)
    index = {cid: i for i, cid in enumerate(class_ids)}
    ids = sorted(paths)
    everything = Images([root / "images" / paths[i] for i in ids],
                        np.array([index[int(labels[i])] for i in ids], dtype=np.int64),
                        [classes[c] for c in class_ids], [paths[i] for i in ids])
    train, test = stratified_split(everything.labels, params.get("test_fraction", 0.2),
                                   params.get("split_seed", 0))
    return Splits(everything.subset(train), everything.subset(test))


_LOADERS: dict[str, Callable[[dict[str, Any]], Splits]] = {
    "digits": _digits,
    "imagefolder": _image_folder,
    "oxford_pets": lambda p: _torchvision_set(p, "oxford_pets"),
    "flowers102": lambda p: _torchvision_set(p, "flowers102"),
    "cub200": _cub200,
}


# -- batches ------------------------------------------------------------------------------------------


def batch_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (seed, epoch, batch ...), stable across runs and machines."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch as index arrays; a last batch of one image joins the one before it
    (batch norm cannot train on a single image)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


class TransformedImages(torch.utils.data.Dataset):
    """Items are ``(index, seed)``: the transform's randomness is seeded per item."""

    def __init__(self, images: Images, transform: Callable[[Image.Image], torch.Tensor]):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        random.seed(seed)
        torch.manual_seed(seed)
        return self.transform(self.images.image(index)), int(self.images.labels[index])


def tensor_cache(images: Images, transform: Callable[[Image.Image], torch.Tensor], workers: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """All images through a deterministic transform, as one uint8 tensor, and their labels."""
    dataset = TransformedImages(images, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers,
                                         sampler=[(i, 0) for i in range(len(images))])
    parts = [x for x, _ in loader]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8), torch.from_numpy(images.labels)


class Batches:
    """Training batches for (epoch, start batch): from a cached tensor, or through a seeded DataLoader.

    ``order(epoch)`` gives an epoch's batches as index arrays (default: a seeded shuffle, ``epoch_order``);
    it must depend on the epoch and fixed settings only, so a resumed run sees the same batches.
    ``cache`` is ``tensor_cache(images, transform)`` when the caller has it already.
    """

    def __init__(self, images: Images, transform: Callable[[Image.Image], torch.Tensor], *, batch_size: int,
                 seed: int, augment: bool, workers: int = 0,
                 order: Callable[[int], list[np.ndarray]] | None = None,
                 cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.images = images
        self.transform = transform
        self.batch_size = batch_size
        self.seed = seed
        self.workers = workers
        self.order = order or (lambda epoch: epoch_order(len(images), batch_size, seed, epoch))
        self.cache = None if augment else cache if cache is not None else tensor_cache(images, transform, workers)

    def __len__(self) -> int:
        return len(self.order(0))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.order(epoch)[start:]
        if self.cache is not None:
            x, y = self.cache
            for idx in batches:
                index = torch.from_numpy(idx)
                yield x[index], y[index]
            return
        keyed = [[(int(i), batch_seed(self.seed, epoch, b + start, j)) for j, i in enumerate(idx)]
                 for b, idx in enumerate(batches)]
        loader = torch.utils.data.DataLoader(TransformedImages(self.images, self.transform), batch_sampler=keyed,
                                             num_workers=self.workers, persistent_workers=False)
        yield from loader


class Normalizer:
    """uint8 NCHW batches -> normalised float batches on ``device`` (channels-last when asked)."""

    def __init__(self, device: torch.device, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, channels_last: bool = False):
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format)
