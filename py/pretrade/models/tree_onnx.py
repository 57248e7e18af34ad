"""A fitted HistGradientBoostingClassifier as flat tree arrays, and as an ONNX graph built from them.

skl2onnx's converter fails on the installed onnx/scikit-learn pair (it writes Python booleans
into an integer attribute), so the graph is built here directly: ai.onnx.ml TreeEnsembleRegressor
(sum of leaf values plus the baseline: the log-odds margin), then the Platt calibration
(sigmoid(a * margin + b)) in plain ONNX ops. Thresholds are rounded DOWN to float32 so that, for
float32 inputs, `x <= threshold` decides exactly as scikit-learn's float64 comparison does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trees:
    """All trees' nodes in one set of arrays; children are indexes into the same arrays."""

    feature: np.ndarray    # int64, split feature (0 for leaves)
    threshold: np.ndarray  # float32, go left when x <= threshold
    left: np.ndarray       # int64, global index of the left child (-1 for leaves)
    right: np.ndarray      # int64
    value: np.ndarray      # float64, leaf value (0 for splits)
    tree: np.ndarray       # int64, tree of each node
    local: np.ndarray      # int64, node id within its tree
    roots: np.ndarray      # int64, global index of each tree's root
    base: float            # baseline log-odds


def _down32(x: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 value."""
    f = x.astype(np.float32)
    over = f.astype(np.float64) > x
    f[over] = np.nextafter(f[over], np.float32(-np.inf))
    return f


def trees_from_hgb(clf) -> Trees:
    """The trees of a fitted binary HistGradientBoostingClassifier (numerical features only)."""
    if getattr(clf, "n_trees_per_iteration_", 1) != 1:
        raise ValueError("only binary classifiers are supported")
    feats, thr, left, right, val, tree, local, roots = [], [], [], [], [], [], [], []
    offset = 0
    for t, (pred,) in enumerate(clf._predictors):  # scikit-learn's fitted trees (no public accessor)
        nodes = pred.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported")
        n = len(nodes)
        leaf = nodes["is_leaf"].astype(bool)
        roots.append(offset)
        feats.append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64))
        thr.append(np.where(leaf, 0.0, nodes["num_threshold"]))
        left.append(np.where(leaf, -1, nodes["left"].astype(np.int64) + offset))
        right.append(np.where(leaf, -1, nodes["right"].astype(np.int64) + offset))
        val.append(np.where(leaf, nodes["value"], 0.0))
        tree.append(np.full(n, t, dtype=np.int64))
        local.append(np.arange(n, dtype=np.int64))
        offset += n
    return Trees(np.concatenate(feats), _down32(np.concatenate(thr)), np.concatenate(left),
                 np.concatenate(right), np.concatenate(val), np.concatenate(tree), np.concatenate(local),
                 np.array(roots, dtype=np.int64), float(np.ravel(clf._baseline_prediction)[0]))


def margin_native(trees: Trees, X: np.ndarray) -> np.ndarray:
    """Log-odds margins of rows X (numpy, vectorised over rows): the reference evaluation."""
    X = np.asarray(X, dtype=np.float32)
    out = np.full(len(X), trees.base)
    rows = np.arange(len(X))
    for r in trees.roots:
        node = np.full(len(X), r)
        while True:
            inner = trees.left[node] >= 0
            if not inner.any():
                break
            go_left = X[rows, trees.feature[node]] <= trees.threshold[node]
            node = np.where(inner, np.where(go_left, trees.left[node], trees.right[node]), node)
        out += trees.value[node]
    return out


def to_onnx(trees: Trees, n_features: int, a: float, b: float) -> bytes:
    """The ONNX model: input `x` float32 (n, n_features) -> `probability` (n, 1) = sigmoid(a*margin+b),
    and `margin` (n, 1), the raw log-odds."""
    from onnx import TensorProto, helper

    leaf = trees.left < 0
    node_kw = {
        "nodes_treeids": trees.tree.tolist(),
        "nodes_nodeids": trees.local.tolist(),
        "nodes_featureids": trees.feature.tolist(),
        "nodes_values": trees.threshold.astype(float).tolist(),
        "nodes_modes": ["LEAF" if lf else "BRANCH_LEQ" for lf in leaf],
        "nodes_truenodeids": np.where(leaf, 0, trees.left - trees.roots[trees.tree]).tolist(),
        "nodes_falsenodeids": np.where(leaf, 0, trees.right - trees.roots[trees.tree]).tolist(),
        "nodes_missing_value_tracks_true": [0] * len(leaf),
        "target_treeids": trees.tree[leaf].tolist(),
        "target_nodeids": trees.local[leaf].tolist(),
        "target_ids": [0] * int(leaf.sum()),
        "target_weights": trees.value[leaf].tolist(),
    }
    ens = helper.make_node("TreeEnsembleRegressor", ["x"], ["margin"], domain="ai.onnx.ml",
                           n_targets=1, aggregate_function="SUM", post_transform="NONE",
                           base_values=[trees.base], **node_kw)
    nodes = [ens,
             helper.make_node("Mul", ["margin", "platt_a"], ["scaled"]),
             helper.make_node("Add", ["scaled", "platt_b"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["probability"])]
    inits = [helper.make_tensor("platt_a", TensorProto.FLOAT, [], [a]),
             helper.make_tensor("platt_b", TensorProto.FLOAT, [], [b])]
    graph = helper.make_graph(
        nodes, "fatfinger",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1]),
         helper.make_tensor_value_info("margin", TensorProto.FLOAT, [None, 1])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="pretrade",
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model.SerializeToString()
