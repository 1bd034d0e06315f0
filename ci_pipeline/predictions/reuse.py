"""Record-level reuse of the scores between runs: a customer whose features did not change keeps last run's scores.

A stored model's score of a customer, its interval and its reasons depend on nothing but that customer's row of
features (:mod:`ci_pipeline.predictions.explain`: "a customer's contributions do not depend on the other rows"),
the model and the cutoff. So each run keeps, per model and customer, a digest of the feature row and the model's
own outputs for it; the next run computes every customer's features (the cheap part), and evaluates the trees and
the reasons (most of the time of scoring) only for customers whose row is new or changed. What ranks customers
against each other (the value bands) is computed over all of them afterwards, as without reuse.

The state holds no feature values, only two independent 64-bit hashes of each row. A different model file,
cutoff, package version, settings or feature layout, a missing or damaged state, or a full refresh scores every
customer and says why; the result is the same either way (tested).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import ci_pipeline
from ci_pipeline.run_state import read_run_state, write_run_state

#: Raised when what the state holds changes meaning: an older state is then not reused.
STATE_FORMAT = 1
STATE_DIR = "ci_pipeline/_state/predictions"
#: The digest columns of a kept row (two hashes with different keys: a false match needs both to collide).
DIGESTS = ("_digest_a", "_digest_b")
_KEYS = ("ci-pipeline-rows", "predictions-two")


def layout(X: pd.DataFrame) -> list:
    """The features' names, types and category levels."""
    return [[str(c), str(X[c].dtype), _levels(X[c])] for c in X.columns]


def fingerprint(model_digest: str, cutoff, settings: dict, features: list) -> str:
    """What a customer's outputs depend on besides its row: the stored model's bytes (their digest), the cutoff,
    the settings, the package version and the features' :func:`layout`."""
    parts = [STATE_FORMAT, ci_pipeline.__version__, model_digest, str(cutoff), settings, features]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _levels(values: pd.Series) -> list[str] | None:
    return list(map(str, values.cat.categories)) if isinstance(values.dtype, pd.CategoricalDtype) else None


def row_digests(X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes of each row of ``X`` (its index, the CustomerId, included)."""
    return tuple(pd.util.hash_pandas_object(X, index=True, hash_key=key.ljust(16)[:16]).to_numpy() for key in _KEYS)


@dataclass
class RowReuse:
    """One model's outputs of the last run (``kept``: indexed by CustomerId, the digests and the outputs), the
    fingerprint they were computed under, and, after :meth:`apply`, this run's rows to keep and what was reused.

    ``kept`` is used only when its fingerprint (``kept_fingerprint``) is this run's (:func:`fingerprint`). A model
    trained in the run has no digest until it is stored: it has no kept rows, and the digest is set afterwards.
    """

    #: The digest of the stored model's bytes.
    model_digest: str
    settings: dict
    kept: pd.DataFrame | None = None
    kept_fingerprint: str | None = None
    #: Why the last run's rows are not used (empty when they are).
    absent: str = ""
    #: The scoring cutoff (set by :func:`reuse_rows`).
    cutoff: object = None
    #: Set by :meth:`apply`: the features' layout, this run's rows to keep (outputs and digests), what was reused.
    features: list | None = None
    rows: pd.DataFrame | None = None
    report: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model_digest, self.cutoff, self.settings, self.features)

    @property
    def kept_count(self) -> int:
        """Customers who kept last run's outputs in :meth:`apply`."""
        return self.report["customers"] - self.report["computed"]

    def apply(self, X: pd.DataFrame, compute: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
        """``compute(X)`` (a frame of outputs indexed like its argument, one row per row, each row's outputs
        depending on that row alone), computed only for the rows that are new or changed since the kept run."""
        self.features = layout(X)
        a, b = row_digests(X)
        same = np.zeros(len(X), dtype=bool)
        usable = self.kept is not None and self.kept_fingerprint == self.fingerprint and X.index.is_unique
        if usable:
            at = self.kept.index.get_indexer(X.index)
            found = at >= 0
            same[found] = (self.kept[DIGESTS[0]].to_numpy()[at[found]] == a[found]) & (
                self.kept[DIGESTS[1]].to_numpy()[at[found]] == b[found]
            )
        elif not self.absent:
            self.absent = "the stored model, cutoff, settings or features changed since the kept scores"
        if len(X) and same.all():
            same[0] = False  # one row computed: the outputs then take the types computing gives
        fresh = compute(X.iloc[np.flatnonzero(~same)])
        if same.any():
            reused = self.kept.iloc[at[same]].set_axis(X.index[same]).drop(columns=list(DIGESTS))
            out = pd.concat([fresh, reused.astype(fresh.dtypes.to_dict())]).reindex(X.index)
        else:
            out = fresh
        self.rows = out.assign(**{DIGESTS[0]: a, DIGESTS[1]: b})
        self.report = {"reused": usable, "customers": len(X), "computed": int((~same).sum())}
        if not usable:
            self.report["why_not"] = self.absent
        return out


def reuse_rows(
    reuse: RowReuse, X: pd.DataFrame, cutoff, compute: Callable[[pd.DataFrame], tuple[pd.DataFrame, np.ndarray]]
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """:meth:`RowReuse.apply` of a model's outputs and contributions matrix (``compute``) at ``cutoff``: the
    outputs, and the contributions matrix when every row was computed (it is of the computed rows only), else
    None."""
    reuse.cutoff = cutoff
    computed: list[np.ndarray] = []

    def outputs(rows: pd.DataFrame) -> pd.DataFrame:
        frame, contrib = compute(rows)
        computed.append(contrib)
        return frame

    out = reuse.apply(X, outputs)
    return out, computed[0] if reuse.report["computed"] == len(X) else None


def hand_out(reuses: dict[str, RowReuse], kept: dict[str, tuple[str, pd.DataFrame]], absent: str) -> None:
    """Give each model's reuse its kept rows (:func:`read_kept`; ``absent``: why there are none), or say why it has
    none: a model trained in this run (no digest yet) or one the last run kept nothing of."""
    for model, reuse in reuses.items():
        if not reuse.model_digest:
            reuse.absent = "the model is trained in this run"
            continue
        reuse.kept_fingerprint, reuse.kept = kept.get(model, (None, None))
        reuse.absent = absent or ("" if model in kept else "no kept scores of this model")


def read_kept(lake, models: list[str]) -> tuple[dict[str, tuple[str, pd.DataFrame]], str]:
    """Each model's kept rows and their fingerprint from the last run, or none and why not."""
    found = read_run_state(lake, STATE_DIR, lambda meta: list(meta.get("models", {})))
    if isinstance(found, str):
        return {}, found
    meta, tables = found
    if meta.get("format") != STATE_FORMAT:
        return {}, f"the state at {lake.url(STATE_DIR)} has another format"
    kept = {}
    for model in models:
        if model in tables and len(tables[model]) == meta["models"][model]["rows"]:
            rows = tables[model]
            rows.index = pd.Index(rows.pop("CustomerId"), dtype="string", name="CustomerId")
            kept[model] = (meta["models"][model]["fingerprint"], rows)
    return kept, ""


def write_kept(lake, reuses: dict[str, RowReuse]) -> None:
    """Keep this run's rows of each model that scored for the next run (the others' kept rows are dropped)."""
    done = {model: r for model, r in reuses.items() if r.rows is not None}
    if not done:
        return
    meta = {
        "format": STATE_FORMAT,
        "models": {model: {"fingerprint": r.fingerprint, "rows": len(r.rows)} for model, r in done.items()},
    }
    tables = {model: r.rows.rename_axis("CustomerId").reset_index() for model, r in done.items()}
    write_run_state(lake, STATE_DIR, tables, meta)
