"""The project configuration: one YAML file per environment, validated at load."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import yaml
from pydantic import Field, PrivateAttr, ValidationError

from ci_pipeline.config.activities import ActivitiesConfig
from ci_pipeline.config.base import Name, StrictModel
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.config.orchestration import OrchestrationConfig
from ci_pipeline.config.publish import PublishConfig
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.config.sources import SourceConfig
from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.errors import ConfigError

#: Environment variable that chooses the configuration file when ``--config`` is not given.
CONFIG_ENV = "CI_PIPELINE_CONFIG"
#: The bundled sample, used when neither ``--config`` nor the environment variable says otherwise.
SAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "data" / "sample" / "ci_pipeline.yaml"


class ProjectConfig(StrictModel):
    """Everything the pipeline needs to know about one environment."""

    #: Project name, used as SegmentProvider / ModelProvider and in run summaries.
    name: str = "ci_pipeline"
    lake: LakeConfig = LakeConfig()
    sources: dict[Name, SourceConfig] = Field(min_length=1)
    unify: UnifyConfig | None = None
    activities: ActivitiesConfig = ActivitiesConfig()
    measures: MeasuresConfig = MeasuresConfig()
    segments: SegmentsConfig = SegmentsConfig()
    publish: PublishConfig = PublishConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file this configuration was loaded from."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the configuration are resolved against."""
        return self._path.parent if self._path is not None else Path.cwd()

    def cross_reference_problems(self) -> list[str]:
        """Problems that span sections (a rule naming a table that does not exist, ...).

        Each section may define ``problems(project) -> list[str]``; every message starts with its key path.
        """
        found: list[str] = []
        for name in type(self).model_fields:
            section = getattr(self, name)
            check = getattr(section, "problems", None)
            if callable(check):
                found.extend(check(self))
        return found

    def resolve_location(self, location: str) -> str:
        """Turn a configured path into an absolute local path or a URL, unchanged if it already is a URL."""
        if is_url(location):
            return location
        path = Path(location).expanduser()
        return str(path if path.is_absolute() else (self.base_dir / path).resolve())


def is_url(location: str) -> bool:
    """True for ``scheme://...`` locations (``file://`` included), False for plain paths."""
    parsed = urlparse(location)
    return bool(parsed.scheme) and len(parsed.scheme) > 1 and "://" in location


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """Which configuration file to use: ``--config``, else ``$CI_PIPELINE_CONFIG``, else the bundled sample."""
    chosen = explicit or os.environ.get(CONFIG_ENV) or SAMPLE_CONFIG
    return Path(chosen).expanduser().resolve()


def load_config(path: str | os.PathLike | None = None) -> ProjectConfig:
    """Load and validate a configuration file.

    Args:
        path: the YAML file; default: :func:`config_path`.

    Raises:
        ConfigError: listing every problem with its key path and a fix.
    """
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(file), [f"the file does not exist; pass --config PATH or set {CONFIG_ENV}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), [f"the file cannot be read ({exc}); save it as UTF-8 text"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            str(file), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax"]
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(file), ["the file must be a YAML mapping with at least a 'sources' key"])
    boolean_keys = _boolean_keys(raw, "")
    if boolean_keys:
        raise ConfigError(str(file), boolean_keys)
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(str(file), [_describe(err) for err in exc.errors()]) from None
    config._path = file
    problems = config.cross_reference_problems()
    if problems:
        raise ConfigError(str(file), problems)
    return config


def _boolean_keys(node, path: str) -> list[str]:
    """Keys YAML turned into true/false: an unquoted ``on``, ``off``, ``yes``, ``no`` (YAML 1.1)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, bool):
                found.append(
                    f"{path or '(top level)'}: a key was read as {key}: YAML reads an unquoted on, off, yes or no as "
                    "true/false; quote it ('on') or correct the key name"
                )
            found += _boolean_keys(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _boolean_keys(value, f"{path}[{i}]")
    return found


def _describe(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "missing":
        fix = "add this key"
    elif kind == "extra_forbidden":
        fix = "remove it or correct its spelling (see docs/configuration.md)"
    else:
        fix = f"got {err.get('input')!r}" if not isinstance(err.get("input"), dict | list) else "fix the value"
    return f"{key}: {msg}; {fix}"
