"""Token matching for real-language hidden-state alignment: scipy's Hungarian solver vs networkx.

The paper's authors matched tokens by building a networkx graph edge by edge (a Python loop
over all n_a x n_b token pairs) and calling `bipartite.minimum_weight_full_matching` on the
negated scores; they note it is slow and memory-hungry. `xling.analysis.alignment.max_weight_matching`
solves the same problem straight from the score matrix with `scipy.optimize.linear_sum_assignment`.
This script times both on random cosine-like score matrices (uniform in [-0.2, 1)) and checks
that the matched weights agree. `--blossom` also times networkx's general `max_weight_matching`
(Edmonds' blossom algorithm, pure Python), the other obvious graph-library route.

    pip install -e '.[bench]'          # networkx
    python benchmarks/matching.py      # 128 and 512 tokens per side
    python benchmarks/matching.py --sizes 64 128 --blossom
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np
import scipy

from xling.analysis.alignment import max_weight_matching


def authors_matching(scores: np.ndarray) -> float:
    """The authors' route: a networkx graph built edge by edge, then a full matching on -scores."""
    import networkx as nx

    n_a, n_b = scores.shape
    graph = nx.Graph()
    for a in range(n_a):
        for b in range(n_b):
            graph.add_edge(a, b + n_a, weight=-scores[a, b])
    matching = nx.algorithms.bipartite.matching.minimum_weight_full_matching(graph, weight="weight")
    return float(sum(scores[u, v - n_a] for u, v in matching.items() if u < n_a))


def blossom_matching(scores: np.ndarray) -> float:
    """networkx's general maximum-weight matching (may leave pairs of negative score unmatched)."""
    import networkx as nx

    n_a, n_b = scores.shape
    graph = nx.Graph()
    graph.add_weighted_edges_from((a, n_a + b, float(scores[a, b])) for a in range(n_a) for b in range(n_b))
    return float(sum(scores[min(u, v), max(u, v) - n_a] for u, v in nx.max_weight_matching(graph, maxcardinality=True)))


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="tokens per side")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method and size (the best counts)")
    parser.add_argument("--blossom", action="store_true", help="also time networkx max_weight_matching (slow)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import networkx as nx

    print(f"# {datetime.date.today()}  {platform.platform()}  {platform.machine()}  {os.cpu_count()} cores  "
          f"python {platform.python_version()}  numpy {np.__version__}  scipy {scipy.__version__}  "
          f"networkx {nx.__version__}")
    print(f"{'tokens':>7} {'scipy (ms)':>11} {'authors nx (s)':>15} {'ratio':>8}" + (
        f" {'blossom nx (s)':>15} {'ratio':>8}" if args.blossom else "") + "  weights equal")
    rng = np.random.default_rng(args.seed)
    for n in args.sizes:
        scores = rng.uniform(-0.2, 1.0, size=(n, n))
        t_scipy, (rows, cols) = best_of(lambda s=scores: max_weight_matching(s), max(args.repeats, 10))
        ours = scores[rows, cols].sum()
        t_nx, nx_weight = best_of(lambda s=scores: authors_matching(s), args.repeats)
        line = f"{n:>7} {t_scipy * 1e3:>11.2f} {t_nx:>15.3f} {t_nx / t_scipy:>7.0f}x"
        equal = np.isclose(ours, nx_weight)
        if args.blossom:
            t_bl, bl_weight = best_of(lambda s=scores: blossom_matching(s), 1)
            line += f" {t_bl:>15.2f} {t_bl / t_scipy:>7.0f}x"
            equal &= np.isclose(ours, bl_weight)
        print(f"{line}  {equal}", flush=True)


if __name__ == "__main__":
    main()
