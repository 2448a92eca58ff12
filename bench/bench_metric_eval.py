"""The metric recipe's evaluation (issue 5): `evaluate.retrieval` scores precision@1, the k-NN votes and,
through pytorch-metric-learning's AccuracyCalculator, mAP@R and R-precision from one chunked faiss search.
Each of its timings is set against bare faiss finding as many neighbours (1, 10, or R for mAP@R) on the same
seeded embeddings, and scikit-learn's brute force against bare faiss.

The memory row is the peak of what numpy and Python allocate during the call (tracemalloc; faiss's own
buffers are not counted), next to the full distance matrix that a naive implementation would hold.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from common import Bench, interleaved, ratio_at_most, value


def main() -> None:
    bench = Bench("metric_eval", "Metric-learning evaluation",
                  "Seconds to score every test embedding against the training embeddings (cosine, exact): the "
                  "metric recipe's `evaluate.retrieval` against bare faiss doing the same search, and scikit-learn.")
    n_queries, n_index, dim = bench.size(10_000, 400), bench.size(50_000, 2_000), bench.size(128, 32)
    classes = bench.size(200, 20)
    base, base_labels, queries, query_labels = embeddings(n_index, n_queries, dim, classes)
    widest = int(np.bincount(base_labels).max())
    for fn in (bare_faiss, sklearn_brute):
        fn(base[:100], base_labels[:100], queries[:10], query_labels[:10], 1)  # imports, first-call set-up
    retrieval(base[:200], base_labels[:200], queries[:10], query_labels[:10], (1,), True)
    scores: dict[str, float] = {}

    def timed(name, fn, *args):
        return lambda: scores.__setitem__(name, fn(base, base_labels, queries, query_labels, *args))

    times = interleaved({"faiss1": timed("faiss1", bare_faiss, 1), "p1": timed("p1", retrieval, (1,), False),
                         "faiss10": timed("faiss10", bare_faiss, 10), "votes": timed("votes", retrieval, (1, 5, 10),
                                                                                      False)}, bench.repeats(5))
    times.update(interleaved({"faissR": timed("faissR", bare_faiss, widest),
                              "full": timed("full", retrieval, (1, 5, 10), True)}, bench.repeats(3)))
    times.update(interleaved({"sklearn": timed("sklearn", sklearn_brute, 1)}, bench.repeats(2)))
    bench.row("`evaluate.retrieval`: precision@1", times["p1"], times["faiss1"], "bare faiss IndexFlatIP, k = 1",
              ratio_at_most(1.2))
    bench.row("`evaluate.retrieval`: precision@1 and k-NN votes (k = 1, 5, 10)", times["votes"], times["faiss10"],
              "bare faiss, k = 10", ratio_at_most(1.2))
    bench.row("`evaluate.retrieval`: all of it, also mAP@R and R-precision (PML's AccuracyCalculator)",
              times["full"], times["faissR"], f"bare faiss, k = {widest} (the largest R)")
    bench.row("scikit-learn NearestNeighbors (brute, cosine), k = 1", times["sklearn"], times["faiss1"],
              "bare faiss, k = 1")
    same = scores["p1"] == scores["votes"] == scores["full"] == scores["faiss1"] == scores["sklearn"]
    bench.text_row("precision@1", f"expt {scores['p1']:.2f}%", f"faiss {scores['faiss1']:.2f}%, scikit-learn "
                   f"{scores['sklearn']:.2f}%", "—", "same answers", same)

    tracemalloc.start()
    retrieval(base, base_labels, queries, query_labels, (1, 5, 10), True)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    matrix = n_queries * n_index * 4 / 2**20
    bench.row("peak numpy memory of all of it", value(peak, "MiB"), value(matrix, "MiB"),
              "a float32 distance matrix", ratio_at_most(0.5))
    bench.note(f"{n_queries:,} queries x {n_index:,} indexed x {dim}-d float32 embeddings, {classes} classes "
               f"(R = {n_index // classes} on average); every timing includes normalising the vectors and building "
               "the index; each row's baseline is bare faiss finding as many neighbours. mAP@R needs each query's "
               "R nearest neighbours; the queries go in chunks of about 4M neighbours, which bounds memory for any "
               "set size.")
    bench.write()


def embeddings(n_index: int, n_queries: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    base_labels = rng.integers(0, classes, n_index)
    query_labels = rng.integers(0, classes, n_queries)
    base = centres[base_labels] + 2.0 * rng.standard_normal((n_index, dim)).astype(np.float32)
    queries = centres[query_labels] + 2.0 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return base, base_labels, queries, query_labels


def retrieval(base, base_labels, queries, query_labels, knn_k: tuple[int, ...], rank_metrics: bool) -> float:
    from expt.core import evaluate

    return evaluate.retrieval(base, base_labels, queries, query_labels, distance="cosine", knn_k=knn_k,
                              keep=max(knn_k), rank_metrics=rank_metrics).precision_at_1


def bare_faiss(base, base_labels, queries, query_labels, k: int) -> float:
    import faiss

    base, queries = base.copy(), queries.copy()
    faiss.normalize_L2(base)
    faiss.normalize_L2(queries)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    nearest = index.search(queries, k)[1][:, 0]
    return 100.0 * float(np.mean(base_labels[nearest] == query_labels))


def sklearn_brute(base, base_labels, queries, query_labels, k: int) -> float:
    from sklearn.neighbors import NearestNeighbors

    nearest = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(base).kneighbors(
        queries, return_distance=False)[:, 0]
    return 100.0 * float(np.mean(base_labels[nearest] == query_labels))


if __name__ == "__main__":
    main()
