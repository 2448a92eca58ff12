"""Evaluation: classification accuracy, features, and nearest-neighbour search with faiss."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
            batch_size: int, forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Outputs of ``forward`` (default: the model) for a uint8 image tensor, in batches, on the CPU."""
    forward = forward or model
    outputs = [forward(prepare(x[i:i + batch_size])).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def classification_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``eval_loss``, ``top1`` and ``top5`` (in percent, as timm reports them)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return {
        "eval_loss": F.cross_entropy(logits, labels).item(),
        "top1": 100.0 * hits[:, 0].float().mean().item(),
        "top5": 100.0 * hits.any(dim=1).float().mean().item(),
    }


def normalize(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def search(index_vectors: np.ndarray, queries: np.ndarray, k: int, distance: str = "cosine",
           chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``index_vectors`` for each query: (distances, indices).

    faiss's flat index, exact; inner product on normalised vectors for ``cosine``
    (returned as 1 - similarity), squared L2 for ``euclidean``. Queries go in chunks
    so memory stays bounded for large sets.
    """
    import faiss

    base = np.ascontiguousarray(index_vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if distance == "cosine":
        base, queries = normalize(base), normalize(queries)
        index = faiss.IndexFlatIP(base.shape[1])
    elif distance == "euclidean":
        index = faiss.IndexFlatL2(base.shape[1])
    else:
        raise ValueError(f"unknown distance {distance!r}")
    index.add(base)
    k = min(k, len(base))
    dists, idx = [], []
    for start in range(0, len(queries), chunk):
        d, i = index.search(queries[start:start + chunk], k)
        dists.append(1.0 - d if distance == "cosine" else d)
        idx.append(i)
    if not dists:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate(dists), np.concatenate(idx)


def nearest_centroid_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                              test_labels: np.ndarray, n_classes: int) -> float:
    """Accuracy (percent) of assigning each test vector to the class whose mean normalised vector is nearest."""
    train, test = normalize(train), normalize(test)
    centroids = np.stack([train[train_labels == c].mean(axis=0) if np.any(train_labels == c)
                          else np.zeros(train.shape[1], np.float32) for c in range(n_classes)])
    predicted = (test @ normalize(centroids).T).argmax(axis=1)
    return 100.0 * float(np.mean(predicted == test_labels))
