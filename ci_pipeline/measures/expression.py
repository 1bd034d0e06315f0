"""Evaluating a parsed measure expression (:mod:`ci_pipeline.grammar.expression`) over numbers or columns."""

from __future__ import annotations

import numpy as np

from ci_pipeline.grammar.expression import Negate, Node, Number, Ref


def evaluate(node: Node, values: dict):
    """Evaluate a tree over numbers or aligned numpy arrays; division by zero gives null (NaN)."""
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Ref):
        return values[node.name]
    if isinstance(node, Negate):
        return -evaluate(node.operand, values)
    left, right = evaluate(node.left, values), evaluate(node.right, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        if node.op == "+":
            out = np.add(left, right)
        elif node.op == "-":
            out = np.subtract(left, right)
        elif node.op == "*":
            out = np.multiply(left, right)
        else:
            out = np.divide(left, right)
    return np.where(np.isfinite(out), out, np.nan) if np.ndim(out) else (out if np.isfinite(out) else np.nan)
