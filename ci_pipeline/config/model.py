"""The project configuration: one YAML file per environment, validated at load."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import yaml
from pydantic import Field, PrivateAttr, ValidationError

from ci_pipeline.config.activities import ActivitiesConfig
from ci_pipeline.config.base import Name, StrictModel
from ci_pipeline.config.checks import section_checks
from ci_pipeline.config.enrich import EnrichConfig
from ci_pipeline.config.governance import GovernanceConfig
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.config.messages import describe
from ci_pipeline.config.orchestration import OrchestrationConfig
from ci_pipeline.config.predictions import PredictionsConfig
from ci_pipeline.config.publish import PublishConfig
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.config.sources import SourceConfig
from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.config.yamlfile import DuplicateKeyError, YamlLimitError, line_number, load_yaml, with_lines
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
    predictions: PredictionsConfig | None = None
    enrich: EnrichConfig = EnrichConfig()
    segments: SegmentsConfig = SegmentsConfig()
    publish: PublishConfig = PublishConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    governance: GovernanceConfig = GovernanceConfig()

    _path: Path | None = PrivateAttr(default=None)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def path(self) -> Path | None:
        """The file this configuration was loaded from."""
        return self._path

    def error(self, problems: list[str]) -> ConfigError:
        """A :class:`ConfigError` for this file whose message gives each problem's line (see :func:`located_error`)."""
        return located_error(str(self._path), problems, self._lines)

    def located(self, messages: list[str]) -> list[str]:
        """Messages that start with a key path as :meth:`error` lists them: each with its line, in file order."""
        return in_file_order(messages, self._lines)

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the configuration are resolved against."""
        return self._path.parent if self._path is not None else Path.cwd()

    def cross_reference_problems(self) -> list[str]:
        """Problems that span sections (a rule naming a table that does not exist, ...), in section order.

        A section is checked by :func:`ci_pipeline.config.checks.section_checks`, or by its own
        ``problems(project) -> list[str]``; every message starts with its key path.
        """
        checks = section_checks()
        found: list[str] = []
        for name in type(self).model_fields:
            check = checks.get(name) or getattr(getattr(self, name), "problems", None)
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


def load_config(path: str | os.PathLike | None = None, *, references: bool = True) -> ProjectConfig:
    """Load and validate a configuration file.

    Args:
        path: the YAML file; default: :func:`config_path`.
        references: also check references between sections (:meth:`ProjectConfig.cross_reference_problems`);
            ``validate`` turns this off to report them together with the problems of the sources.

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
        raw, lines = load_yaml(text)
    except YamlLimitError as exc:
        raise ConfigError(str(file), [str(exc)]) from None
    except DuplicateKeyError as exc:
        raise ConfigError(str(file), exc.problems) from None
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
        raise located_error(str(file), boolean_keys, lines)
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise located_error(str(file), [describe(err, ProjectConfig) for err in exc.errors()], lines) from None
    config._path = file
    config._lines = lines
    problems = config.cross_reference_problems() if references else []
    if problems:
        raise config.error(problems)
    return config


def located_error(file: str, problems: list[str], lines: dict[str, int]) -> ConfigError:
    """A ConfigError whose message prefixes each problem with its line in the file (``line 12: key.path: ...``).

    ``problems`` keeps the plain messages, each starting with its key path, for programs that read them.
    """
    error = ConfigError(file, in_file_order(problems, lines))
    error.problems = problems
    return error


def in_file_order(messages: list[str], lines: dict[str, int]) -> list[str]:
    """Each message with its line (:func:`with_lines`), in file order, so the list reads top to bottom like the
    file; messages with no line come last."""
    return sorted(with_lines(messages, lines), key=lambda p: line_number(p) or float("inf"))


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
