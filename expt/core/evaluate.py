"""Evaluation: classification accuracy, features, nearest-neighbour search with faiss, retrieval scores."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

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


def build_index(vectors: np.ndarray, distance: str = "cosine"):
    """An exact faiss index over ``vectors``: inner product on normalised vectors for ``cosine``, L2 for
    ``euclidean``."""
    import faiss

    base = np.ascontiguousarray(vectors, dtype=np.float32)
    if distance == "cosine":
        base = normalize(base)
        index = faiss.IndexFlatIP(base.shape[1])
    elif distance == "euclidean":
        index = faiss.IndexFlatL2(base.shape[1])
    else:
        raise ValueError(f"unknown distance {distance!r}")
    index.add(base)
    return index


# queries x indexed rows per BLAS block of faiss's exact search (its defaults: 4096 x 1024). Fewer, larger blocks
# mean fewer thread barriers, each a wait for the slowest thread: on 2 cores shared with other work a search for 10
# neighbours takes about 0.7x the time, on idle cores the same; the same neighbours and distances bit for bit, for a
# 32 MiB block of similarities instead of 16 MiB.
FAISS_BLOCKS = (2048, 4096)


@contextmanager
def faiss_blocks(queries: int = FAISS_BLOCKS[0], indexed: int = FAISS_BLOCKS[1]) -> Iterator[None]:
    """faiss's exact searches in blocks of ``queries`` x ``indexed`` rows while inside (a process-wide setting,
    restored on leaving)."""
    import faiss

    cvar = faiss.cvar
    saved = cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs
    cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = queries, indexed
    try:
        yield
    finally:
        cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = saved


def query_index(index, queries: np.ndarray, k: int, distance: str = "cosine",
                chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows for each query, in chunks: (distances, indices); cosine distances
    are 1 - similarity, euclidean ones squared L2 (faiss's)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if distance == "cosine":
        queries = normalize(queries)
    k = min(k, index.ntotal)
    dists, idx = [], []
    with faiss_blocks():
        for start in range(0, len(queries), chunk):
            d, i = index.search(queries[start:start + chunk], k)
            dists.append(1.0 - d if distance == "cosine" else d)
            idx.append(i)
    if not dists:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate(dists), np.concatenate(idx)


def search(index_vectors: np.ndarray, queries: np.ndarray, k: int, distance: str = "cosine",
           chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``index_vectors`` for each query: (distances, indices).

    faiss's flat index, exact; inner product on normalised vectors for ``cosine``
    (returned as 1 - similarity), squared L2 for ``euclidean``. Queries go in chunks
    so memory stays bounded for large sets.
    """
    return query_index(build_index(index_vectors, distance), queries, k, distance, chunk)


def knn_vote(neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The majority class among each row's neighbours (nearest first); a tie goes to the tied class whose
    nearest member ranks first, so one neighbour is the 1-NN prediction."""
    n, k = neighbour_labels.shape
    if 0 < k <= 32:  # count each neighbour's class among the row's k (n x k x k booleans); the first maximum wins
        same = neighbour_labels[:, :, None] == neighbour_labels[:, None, :]
        return neighbour_labels[np.arange(n), same.sum(axis=2, dtype=np.int16).argmax(axis=1)]
    rows = np.repeat(np.arange(n), k)
    votes = np.bincount(rows * n_classes + neighbour_labels.ravel(), minlength=n * n_classes).reshape(n, n_classes)
    first = np.full((n, n_classes), k, np.int64)
    for rank in range(k - 1, -1, -1):
        first[np.arange(n), neighbour_labels[:, rank]] = rank
    return np.argmax(votes * (k + 1) - first, axis=1)


class _IndexKNN:
    """A k-NN function for pytorch-metric-learning's AccuracyCalculator over a prebuilt faiss index; it
    searches ``at_least`` neighbours and keeps them, so one search serves every metric."""

    def __init__(self, index, distance: str, at_least: int):
        self.index, self.distance, self.at_least = index, distance, at_least
        self.distances = self.indices = None

    def __call__(self, query: torch.Tensor, k: int, reference: torch.Tensor, ref_includes_query: bool):
        if ref_includes_query or len(reference) != self.index.ntotal:
            raise ValueError("the index holds the reference set; queries are not part of it")
        self.distances, self.indices = query_index(self.index, query.cpu().numpy(), max(k, self.at_least),
                                                   self.distance)
        return torch.from_numpy(self.distances[:, :k]), torch.from_numpy(self.indices[:, :k])


@dataclass
class Retrieval:
    """Test queries against an index of training embeddings: scores in percent and each query's neighbours."""

    precision_at_1: float
    map_at_r: float | None
    r_precision: float | None
    knn_accuracy: dict[int, float]
    hits: np.ndarray              # per query: its nearest neighbour has its class
    predicted: np.ndarray         # per query: the 1-NN class
    indices: np.ndarray           # (queries, keep) training indices, nearest first
    distances: np.ndarray         # (queries, keep): cosine distance 1 - cos, or Euclidean distance

    def scores(self) -> dict[str, float]:
        values = {"test_accuracy": self.precision_at_1}
        if self.map_at_r is not None:
            values.update(map_at_r=self.map_at_r, r_precision=self.r_precision)
        values.update({f"knn{k}_accuracy": v for k, v in self.knn_accuracy.items()})
        return values


def retrieval(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, *,
              distance: str = "cosine", knn_k: Sequence[int] = (1, 5, 10), keep: int = 10,
              rank_metrics: bool = True, budget: int = 1 << 22) -> Retrieval:
    """precision@1 (the 1-NN class is the query's), mAP@R and R-precision (pytorch-metric-learning's
    AccuracyCalculator, with this faiss index as its k-NN function) and k-NN majority-vote accuracy.

    One exact faiss search per chunk of queries finds max(R, k, keep) neighbours, where R is the number of
    training embeddings of the query's class; chunks hold about ``budget`` neighbours, so memory stays
    bounded however large the sets are. A query whose class has no training embedding counts as a miss
    in precision@1 and is left out of mAP@R and R-precision (as the AccuracyCalculator does).
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = int(max(train_labels.max(initial=-1), test_labels.max(initial=-1))) + 1
    counts = np.bincount(train_labels, minlength=n_classes)
    index = build_index(train, distance)
    widest = int(counts[test_labels].max(initial=0)) if rank_metrics else 0
    search_k = min(max(widest, max(knn_k, default=1), keep, 1), len(train))
    chunk = max(1, min(len(test), budget // max(search_k, n_classes, 1)))
    calculator = None
    if rank_metrics:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        knn = _IndexKNN(index, distance, search_k)
        calculator = AccuracyCalculator(include=("mean_average_precision_at_r", "r_precision"), k="max_bin_count",
                                        device=torch.device("cpu"), knn_func=knn)
    rank_sums = {"mean_average_precision_at_r": 0.0, "r_precision": 0.0}
    ranked = 0
    hits, predicted, kept_i, kept_d = [], [], [], []
    votes = {k: 0 for k in knn_k}
    for start in range(0, len(test), chunk):
        queries, labels = test[start:start + chunk], test_labels[start:start + chunk]
        if calculator is not None and np.any(counts[labels] > 0):
            found = calculator.get_accuracy(queries, labels, train, train_labels, ref_includes_query=False)
            present = int(np.sum(counts[labels] > 0))
            for key in rank_sums:
                rank_sums[key] += found[key] * present
            ranked += present
            dist, idx = knn.distances, knn.indices
        else:
            dist, idx = query_index(index, queries, search_k, distance)
        neighbour_labels = train_labels[idx]
        hits.append(neighbour_labels[:, 0] == labels)
        predicted.append(neighbour_labels[:, 0])
        for k in knn_k:
            votes[k] += int(np.sum(knn_vote(neighbour_labels[:, :k], n_classes) == labels))
        kept_i.append(idx[:, :keep])
        kept_d.append(np.sqrt(np.maximum(dist[:, :keep], 0)) if distance == "euclidean" else dist[:, :keep])
    n = max(1, len(test))
    hit = np.concatenate(hits) if hits else np.zeros(0, bool)
    return Retrieval(
        precision_at_1=100.0 * float(hit.sum()) / n,
        map_at_r=100.0 * rank_sums["mean_average_precision_at_r"] / ranked if ranked else None,
        r_precision=100.0 * rank_sums["r_precision"] / ranked if ranked else None,
        knn_accuracy={k: 100.0 * v / n for k, v in votes.items()},
        hits=hit,
        predicted=np.concatenate(predicted) if predicted else np.zeros(0, np.int64),
        indices=np.concatenate(kept_i) if kept_i else np.zeros((0, keep), np.int64),
        distances=np.concatenate(kept_d) if kept_d else np.zeros((0, keep), np.float32),
    )


def per_class_precision(hits: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """precision@1 in percent per class (NaN for a class without queries)."""
    labels = np.asarray(labels, dtype=np.int64)
    total = np.bincount(labels, minlength=n_classes).astype(np.float64)
    correct = np.bincount(labels, weights=np.asarray(hits, dtype=np.float64), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * correct / total, np.nan)


def nearest_centroid_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                              test_labels: np.ndarray, n_classes: int) -> float:
    """Accuracy (percent) of assigning each test vector to the class whose mean normalised vector is nearest."""
    train, test = normalize(train), normalize(test)
    centroids = np.stack([train[train_labels == c].mean(axis=0) if np.any(train_labels == c)
                          else np.zeros(train.shape[1], np.float32) for c in range(n_classes)])
    predicted = (test @ normalize(centroids).T).argmax(axis=1)
    return 100.0 * float(np.mean(predicted == test_labels))
