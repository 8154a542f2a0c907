"""Exact (path-dependent) TreeSHAP for shallow trees, as lookup tables.

For a tree, the path-dependent TreeSHAP value of feature i at x is the Shapley value of

    v(S) = E[tree(x) | x_S]   (at a split on a feature in S, follow x; on any other
                               feature, average both children weighted by their training counts)

(Lundberg et al., "Consistent individualized feature attribution for tree ensembles"; the
same values as `shap.TreeExplainer(feature_perturbation="tree_path_dependent")`).

v(S) depends on x only through the direction x takes at each split. A tree of depth 3 has
at most 7 splits, so at most 2**7 = 128 direction patterns: this module computes the Shapley
values for every pattern once, from the definition (all subsets of the tree's features, so
nothing is approximated), and an explanation is then a table lookup per tree. The values
sum, for every pattern, to the tree's output minus its expected value (Shapley efficiency),
so the contributions of a whole ensemble sum exactly to its raw score minus the base value.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import factorial

import numpy as np

MAX_SPLITS = 7  # depth 3: 1 + 2 + 4 splits
PATTERNS = 1 << MAX_SPLITS


@dataclass(frozen=True)
class Tree:
    """One tree in a plain form: `left[n]`/`right[n]` are -1 for a leaf; `split[n]` is the
    index of node n among the tree's splits (its bit in a direction pattern), -1 for a leaf."""

    feature: np.ndarray  # int, per node
    left: np.ndarray  # int, per node
    right: np.ndarray  # int, per node
    value: np.ndarray  # float, per node (leaves only matter)
    count: np.ndarray  # float, per node: training samples that reached it
    split: np.ndarray  # int, per node


def leaf_values(tree: Tree) -> np.ndarray:
    """The tree's output for every direction pattern (bit j set: x goes left at split j)."""
    return _expectation(tree, set(range(int(tree.feature.max()) + 1)), _bits())


def shapley_table(tree: Tree) -> tuple[np.ndarray, np.ndarray, float]:
    """(features, phi, expected): the tree's distinct split features (at most MAX_SPLITS, padded
    with -1), the Shapley value of each for every pattern (shape PATTERNS x MAX_SPLITS), and
    the tree's expected value v(empty set)."""
    used = sorted({int(tree.feature[n]) for n in range(len(tree.feature)) if tree.left[n] >= 0})
    if len(used) > MAX_SPLITS:
        raise ValueError(f"a tree with {len(used)} split features is deeper than TreeSHAP tables allow")
    bits = _bits()
    k = len(used)
    values = {subset: _expectation(tree, set(subset), bits) for r in range(k + 1) for subset in combinations(used, r)}
    phi = np.zeros((PATTERNS, MAX_SPLITS))
    for position, feature in enumerate(used):
        others = [f for f in used if f != feature]
        for r in range(k):
            weight = factorial(r) * factorial(k - r - 1) / factorial(k)
            for subset in combinations(others, r):
                with_feature = tuple(sorted((*subset, feature)))
                phi[:, position] += weight * (values[with_feature] - values[subset])
    features = np.full(MAX_SPLITS, -1, dtype=np.int64)
    features[:k] = used
    return features, phi, float(values[()][0])


def _bits() -> np.ndarray:
    """bits[j, p]: does pattern p go left at split j."""
    patterns = np.arange(PATTERNS)
    return np.array([(patterns >> j) & 1 for j in range(MAX_SPLITS)], dtype=bool)


def _expectation(tree: Tree, known: set[int], bits: np.ndarray) -> np.ndarray:
    """v(S) for every pattern, S = `known` features."""

    def node_value(n: int) -> np.ndarray:
        left, right = int(tree.left[n]), int(tree.right[n])
        if left < 0:
            return np.full(PATTERNS, float(tree.value[n]))
        v_left, v_right = node_value(left), node_value(right)
        if int(tree.feature[n]) in known:
            return np.where(bits[int(tree.split[n])], v_left, v_right)
        c_left, c_right = float(tree.count[left]), float(tree.count[right])
        return (c_left * v_left + c_right * v_right) / (c_left + c_right)

    return node_value(0)
