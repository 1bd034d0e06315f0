"""Joint comparisons: correlated fields compared as one comparison, so the model does not count them twice.

The Fellegi-Sunter model takes its comparisons as independent evidence. Places nested in one another are not: two
records on one street share its postal code and city. Compared apart, a pair agreeing on all three would count the
same evidence three times; left out, the postal code would say nothing when the street is missing on one side. A
place comparison keeps them in one comparison whose levels run from the most specific place to the most general,
each level with its own m and u. A postal code takes the same ``then`` (``PostalCodeComparison``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ci_pipeline.unify.probabilistic.comparisons import (
    LIBRARY,
    JaroWinklerAtThresholds,
    SettingsError,
    with_general_places,
)
from ci_pipeline.unify.probabilistic.table import Table


@dataclass(frozen=True)
class PlaceComparison(JaroWinklerAtThresholds):
    """A place and the more general places it implies: exact, Jaro-Winkler similarity of ``column`` at each
    threshold, then ``same_<column>`` for each column of ``then`` (from the most specific), else.

    A pair reaches ``same_postal_code`` when its postal codes agree and its streets differ or one is missing. The
    comparison is null only when no place is known on both sides.
    """

    kind = "place"
    thresholds: tuple[float, ...] = (0.92, 0.8)
    then: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.then:
            raise SettingsError(
                f"comparison {self.column!r}: a 'place' comparison needs 'then', the more general places (for "
                "example [postal_code, city]); without them use 'jaro_winkler'"
            )
        repeated = [c for c in self.then if c == self.column or list(self.then).count(c) > 1]
        if repeated:
            raise SettingsError(f"comparison {self.column!r}: then names {', '.join(sorted(set(repeated)))} twice")
        super().__post_init__()

    @property
    def columns(self) -> tuple[str, ...]:
        """The place and the general places."""
        return (self.column, *self.then)

    @property
    def all_levels(self) -> tuple[str, ...]:
        return (*super().all_levels[:-1], *(f"same_{c}" for c in self.then), "else")

    def gamma(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The level reached by each pair of record positions; -1 when no place is known on both sides."""
        # The specific place's own levels (exact, then each threshold), as a plain Jaro-Winkler comparison has them.
        own = JaroWinklerAtThresholds(self.column, thresholds=self.thresholds).gamma(table, left, right)
        return with_general_places(self, own, table, left, right)


# Settings are read through the library: a place comparison is one of its kinds.
LIBRARY.setdefault(PlaceComparison.kind, PlaceComparison)
