"""A trained model as bytes for the lake: the fitted objects with their metrics, features, data window and versions."""

from __future__ import annotations

import io
import pickle
import platform
from dataclasses import dataclass, field
from importlib import metadata

from ci_pipeline.errors import UserError

#: Bumped when the stored layout changes; older models must be retrained.
FORMAT = 2
_LIBRARIES = ("scikit-learn", "scipy", "numpy", "pandas")


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a model depends on."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        versions[name] = metadata.version(name)
    return versions


@dataclass(frozen=True)
class StoredModel:
    """A trained model and what it was trained on."""

    #: ``TransactionalChurn``, ``CustomerLifetimeValue`` or ``ProductRecommendation``.
    model: str
    #: The fitted model object (the module's own dataclass).
    fitted: object
    #: Feature names, in the order the model reads them.
    features: list[str]
    #: The backtest metrics (model and baselines).
    metrics: dict
    #: Cutoffs and purchase period the model was trained on (ISO strings).
    data_window: dict
    library_versions: dict = field(default_factory=library_versions)

    def to_bytes(self) -> bytes:
        """The model as pickle bytes (load them only from the project's own lake)."""
        buffer = io.BytesIO()
        pickle.dump({"format": FORMAT, "model": self}, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(payload: bytes, where: str = "stored model") -> StoredModel:
        """Load a model written by :meth:`to_bytes`; a foreign or outdated payload is a clear error."""
        try:
            content = pickle.loads(payload)
        except Exception as exc:
            raise UserError(f"{where}: not a readable stored model ({type(exc).__name__}); retrain the model") from None
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise UserError(f"{where}: stored in an older format; retrain the model")
        return content["model"]

    def check_features(self, available: list[str], where: str = "stored model") -> None:
        """Refuse to score when a feature the model was trained on no longer exists."""
        missing = [f for f in self.features if f not in set(available)]
        if missing:
            raise UserError(
                f"{where} ({self.model}, trained {self.data_window.get('trained_at_cutoff')}) uses feature(s) "
                f"{', '.join(missing)} that the data no longer has; retrain the model or restore the field(s)"
            )
