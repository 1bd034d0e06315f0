"""Clusters from links: connected components, with each cluster's density so weakly held customers show."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ci_pipeline.unify.cluster import components, densities


def clusters(n: int, links: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Connected components over ``links`` and the density of each cluster of two or more records.

    Args:
        n: number of records.
        links: accepted links with ``left``, ``right`` (record positions), e.g. ``predict(...)`` rows with ``link``.

    Returns:
        The cluster label of each record (the smallest member position) and one row per cluster of two or more
        records: ``cluster``, ``size``, ``links`` (distinct linked pairs inside it), ``density`` (links / possible
        pairs; 1.0 = every two members linked, near 0 = held together by a chain).
    """
    left = links["left"].to_numpy(np.int64)
    right = links["right"].to_numpy(np.int64)
    label = components(n, left, right)
    return label, densities(label, left, right)
