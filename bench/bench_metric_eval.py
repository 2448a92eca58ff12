"""The metric recipe's evaluation (issue 5): `evaluate.retrieval`, which scores precision@1, the k-NN votes and,
through pytorch-metric-learning's AccuracyCalculator, mAP@R and R-precision from one chunked faiss search,
against bare faiss (precision@1 only) and scikit-learn brute force, on the same seeded embeddings.

The memory row is the peak of what numpy and Python allocate during the call (tracemalloc; faiss's own
buffers are not counted), next to the full distance matrix that a naive implementation would hold.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from common import Bench, interleaved, ratio_at_most, value


def main() -> None:
    bench = Bench("metric_eval", "Metric-learning evaluation",
                  "Seconds for precision@1 of every test embedding against the training embeddings (cosine, exact): "
                  "the metric recipe's `evaluate.retrieval` against bare faiss and scikit-learn brute force.")
    n_queries, n_index, dim = bench.size(10_000, 400), bench.size(50_000, 2_000), bench.size(128, 32)
    classes = bench.size(200, 20)
    base, base_labels, queries, query_labels = embeddings(n_index, n_queries, dim, classes)
    for fn in (bare_faiss, sklearn_brute):
        fn(base[:100], base_labels[:100], queries[:10], query_labels[:10])  # imports, first-call set-up
    retrieval(base[:200], base_labels[:200], queries[:10], query_labels[:10], True)
    scores: dict[str, float] = {}

    def timed(name, fn, *args):
        return lambda: scores.__setitem__(name, fn(base, base_labels, queries, query_labels, *args))

    fast = interleaved({"faiss": timed("faiss", bare_faiss), "p1": timed("p1", retrieval, False)},
                       bench.repeats(5))
    full = interleaved({"full": timed("full", retrieval, True)}, bench.repeats(3))
    slow = interleaved({"sklearn": timed("sklearn", sklearn_brute)}, bench.repeats(2))
    faiss_name = "bare faiss IndexFlatIP, k = 1"
    bench.row("`evaluate.retrieval`: precision@1 and k-NN votes (k = 1, 5, 10)", fast["p1"], fast["faiss"],
              faiss_name, ratio_at_most(1.2))
    bench.row("`evaluate.retrieval`: also mAP@R and R-precision (k = R neighbours)", full["full"], fast["faiss"],
              faiss_name)
    bench.row("scikit-learn NearestNeighbors (brute, cosine), k = 1", slow["sklearn"], fast["faiss"], faiss_name)
    same = scores["p1"] == scores["faiss"] == scores["full"] == scores["sklearn"]
    bench.text_row("precision@1", f"expt {scores['p1']:.2f}%", f"faiss {scores['faiss']:.2f}%, scikit-learn "
                   f"{scores['sklearn']:.2f}%", "—", "same answers", same)

    tracemalloc.start()
    retrieval(base, base_labels, queries, query_labels, True)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    matrix = n_queries * n_index * 4 / 2**20
    bench.row("peak numpy memory of the full evaluation", value(peak, "MiB"), value(matrix, "MiB"),
              "a float32 distance matrix", ratio_at_most(0.5))
    bench.note(f"{n_queries:,} queries x {n_index:,} indexed x {dim}-d float32 embeddings, {classes} classes "
               f"(R = {n_index // classes} on average); every timing includes normalising the vectors and building "
               "the index. mAP@R needs each query's R nearest neighbours, so that search keeps R columns instead of "
               "one; the queries go in chunks of about 4M neighbours, which bounds memory for any set size.")
    bench.write()


def embeddings(n_index: int, n_queries: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    base_labels = rng.integers(0, classes, n_index)
    query_labels = rng.integers(0, classes, n_queries)
    base = centres[base_labels] + 1.1 * rng.standard_normal((n_index, dim)).astype(np.float32)
    queries = centres[query_labels] + 1.1 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return base, base_labels, queries, query_labels


def retrieval(base, base_labels, queries, query_labels, rank_metrics: bool) -> float:
    from expt.core import evaluate

    return evaluate.retrieval(base, base_labels, queries, query_labels, distance="cosine", knn_k=(1, 5, 10),
                              rank_metrics=rank_metrics).precision_at_1


def bare_faiss(base, base_labels, queries, query_labels) -> float:
    import faiss

    base, queries = base.copy(), queries.copy()
    faiss.normalize_L2(base)
    faiss.normalize_L2(queries)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    nearest = index.search(queries, 1)[1][:, 0]
    return 100.0 * float(np.mean(base_labels[nearest] == query_labels))


def sklearn_brute(base, base_labels, queries, query_labels) -> float:
    from sklearn.neighbors import NearestNeighbors

    nearest = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(base).kneighbors(
        queries, return_distance=False)[:, 0]
    return 100.0 * float(np.mean(base_labels[nearest] == query_labels))


if __name__ == "__main__":
    main()
