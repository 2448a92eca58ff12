"""Item 5: exact nearest neighbours for precision@1, expt's `evaluate.search` (faiss, chunked queries)
against bare faiss, scikit-learn brute force and torch matmul + topk, on the same seeded embeddings.

The embeddings are clustered (100 classes, a Gaussian around each class centre), so precision@1 is a
real score and not 0 or 100. Every method finds the cosine nearest neighbour; agreement is the share of
queries whose neighbour is the one bare faiss found.
"""

from __future__ import annotations

import numpy as np

from common import Bench, interleaved, ratio_at_most


def main() -> None:
    bench = Bench("nn", "Nearest neighbours",
                  "Seconds to find each query's cosine nearest neighbour (exact) and score precision@1: "
                  "expt's `evaluate.search` against bare faiss, scikit-learn brute force and torch matmul + topk.")
    n_queries, n_index, dim = (bench.size(10_000, 500), bench.size(50_000, 2_000), bench.size(128, 32))
    base, base_labels, queries, query_labels = embeddings(n_index, n_queries, dim)
    for fn in (bare_faiss, expt_search, torch_topk, sklearn_brute):
        fn(base[:100], queries[:10])  # imports and first-call set-up, untimed
    found: dict[str, np.ndarray] = {}

    def run(name: str, fn) -> None:
        found[name] = np.asarray(fn(base, queries)).reshape(-1)

    bench.progress("faiss and expt")
    fast = interleaved({name: (lambda name=name, fn=fn: run(name, fn)) for name, fn in
                        (("faiss", bare_faiss), ("expt", expt_search))}, bench.repeats(5))
    bench.progress("torch and scikit-learn")
    slow = interleaved({name: (lambda name=name, fn=fn: run(name, fn)) for name, fn in
                        (("torch", torch_topk), ("sklearn", sklearn_brute))}, bench.repeats(2))
    times = {**fast, **slow}
    reference = found["faiss"]
    faiss_name = "bare faiss (IndexFlatIP)"
    bench.row("expt `evaluate.search`", times["expt"], times["faiss"], faiss_name, ratio_at_most(1.2))
    bench.row("torch matmul + topk (chunks of 4,096 queries)", times["torch"], times["faiss"], faiss_name)
    bench.row("scikit-learn NearestNeighbors (brute, cosine)", times["sklearn"], times["faiss"], faiss_name)
    for name, label in (("expt", "expt"), ("torch", "torch"), ("sklearn", "scikit-learn")):
        agree = float(np.mean(found[name] == reference))
        p1 = precision_at_1(found[name], base_labels, query_labels)
        bench.text_row(f"{label}: precision@1, agreement with faiss", f"{p1:.2%}, {agree:.2%} agree",
                       f"faiss: {precision_at_1(reference, base_labels, query_labels):.2%}", "—",
                       "same answers" if name == "expt" else "reference", agree == 1.0 if name == "expt" else None)
    bench.note(f"{n_queries:,} queries x {n_index:,} indexed x {dim}-d float32 embeddings, 100 classes; "
               f"faiss and expt {bench.repeats(5)} repeats, torch and scikit-learn {bench.repeats(2)}, each pair "
               "interleaved. Every timing includes normalising the vectors and building the index. faiss uses "
               "its OpenMP threads, torch and scikit-learn their BLAS threads, on the same cores.")
    bench.write()


def embeddings(n_index: int, n_queries: int, dim: int, classes: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    base_labels = rng.integers(0, classes, n_index)
    query_labels = rng.integers(0, classes, n_queries)
    noise = 0.2 * dim ** 0.5  # the same overlap between classes whatever the dimension: precision@1 near 85%
    base = centres[base_labels] + noise * rng.standard_normal((n_index, dim)).astype(np.float32)
    queries = centres[query_labels] + noise * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return base, base_labels, queries, query_labels


def precision_at_1(nearest: np.ndarray, base_labels: np.ndarray, query_labels: np.ndarray) -> float:
    return float(np.mean(base_labels[nearest] == query_labels))


def bare_faiss(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    base, queries = base.copy(), queries.copy()  # normalize_L2 works in place
    faiss.normalize_L2(base)
    faiss.normalize_L2(queries)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(queries, 1)[1]


def expt_search(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    from expt.core import evaluate

    return evaluate.search(base, queries, k=1, distance="cosine")[1]


def torch_topk(base: np.ndarray, queries: np.ndarray, chunk: int = 4096) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    b = F.normalize(torch.from_numpy(base), dim=1)
    q = F.normalize(torch.from_numpy(queries), dim=1)
    return torch.cat([(q[i:i + chunk] @ b.T).topk(1, dim=1).indices for i in range(0, len(q), chunk)]).numpy()


def sklearn_brute(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(base).kneighbors(
        queries, return_distance=False)


if __name__ == "__main__":
    main()
