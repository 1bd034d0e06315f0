"""Unification: map, normalize, deduplicate, match, cluster, merge and keep CustomerIds stable (pure pandas)."""

from ci_pipeline.unify.attach import OUTCOMES
from ci_pipeline.unify.engine import UnifyResult, make_normalizer, unify
from ci_pipeline.unify.identity import assign_ids, new_customer_id
from ci_pipeline.unify.normalize import Normalizer, phone_digits, read_alias_file

__all__ = [
    "OUTCOMES",
    "Normalizer",
    "UnifyResult",
    "assign_ids",
    "make_normalizer",
    "new_customer_id",
    "phone_digits",
    "read_alias_file",
    "unify",
]
