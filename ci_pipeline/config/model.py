"""The project configuration: one YAML file per environment, validated at load."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from urllib.parse import urlparse

import yaml
from pydantic import AfterValidator, BaseModel, Field, PrivateAttr, ValidationError

from ci_pipeline.config.activities import ActivitiesConfig
from ci_pipeline.config.base import Name, StrictModel, check_secret_ref, did_you_mean, pattern_problem
from ci_pipeline.config.checks import section_checks
from ci_pipeline.config.enrich import EnrichConfig
from ci_pipeline.config.governance import GovernanceConfig
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.config.orchestration import OrchestrationConfig
from ci_pipeline.config.predictions import PredictionsConfig
from ci_pipeline.config.publish import PublishConfig
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.config.sources import SourceConfig
from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.config.yamlfile import DuplicateKeyError, YamlLimitError, line_number, load_yaml, with_lines
from ci_pipeline.errors import ConfigError, key_path

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
        raise located_error(str(file), [_describe(err) for err in exc.errors()], lines) from None
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


def _describe(err: dict, root: type[BaseModel] | None = None) -> str:
    """One pydantic error as ``key.path: what is wrong; the fix``. A secret's value is never repeated. ``root``:
    the model the location starts at (default the whole configuration)."""
    loc = tuple(err["loc"])
    key = key_path(loc) or "(top level)"
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    numeric_key = _numeric_key(err)
    if numeric_key is not None:
        return numeric_key
    if kind == "missing":
        fix = "add this key"
    elif kind == "extra_forbidden":
        fix = "remove it or correct its spelling (see docs/configuration.md)"
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1], root), n=1, cutoff=0.6)
        if close:
            fix = f"remove it or correct its spelling: did you mean '{close[0]}'? (see docs/configuration.md)"
    elif _holds_secret(loc, root):
        # A value refused from a secret key may be the secret itself: say which key, never what it held.
        fix = "fix the value"
    elif kind == "string_pattern_mismatch" and (
        words := pattern_problem(err["input"], err["ctx"]["pattern"], is_key=loc[-1:] == ("[key]",))
    ):
        return f"{key}: {words}"
    elif isinstance(err.get("input"), dict | list):
        if kind == "value_error":
            # Our own validators' messages on a block end in their fix; a generic one would say it twice.
            return f"{key}: {msg}"
        fix = "fix the value"
    elif kind == "string_type" and (err.get("input") is None or isinstance(err.get("input"), bool | int | float)):
        # YAML reads an unquoted null, ~, yes, 0012 or 1e3 as no value, a truth value or a number.
        fix = f"got {err.get('input')!r}: write the text in quotes (YAML reads null, yes and numbers unquoted as such)"
    elif kind == "value_error" and repr(err.get("input")) in msg:
        # Our own validators name the value already.
        return f"{key}: {msg}"
    else:
        fix = f"got {err.get('input')!r}"
    return f"{key}: {msg}; {fix}"


def describe_errors(exc: ValidationError, root: type[BaseModel], where: str) -> list[str]:
    """The errors of a block validated on its own (an enrichment's ``params``, model ``root``, at key path
    ``where``) worded as :func:`load_config` words the configuration's: ``<where>.<key>: what is wrong; the fix``.

    An unknown key gets its near miss and the keys the block takes; a value none of a union's alternatives takes
    (``{path, type}`` or a text) is one message, about the alternative its value has the shape of."""
    errors = exc.errors()
    tried: dict[tuple, list[dict]] = {}
    for err in errors:
        keys = _walk(tuple(err["loc"]), root)[1]
        if keys != tuple(err["loc"]):
            # A union alternative: keep those that got past the value's shape, or the first when none did.
            tried.setdefault(keys[: len(keys) - _tail(err["loc"], keys)], []).append({**err, "loc": keys})
    shaped = {
        point: [e for e in found if not e["type"].endswith("_type")] or found[:1] for point, found in tried.items()
    }
    chosen = [e for e in errors if _walk(tuple(e["loc"]), root)[1] == tuple(e["loc"])]
    chosen += [e for found in shaped.values() for e in found]
    return [f"{where}.{_describe_params_error(err, root)}" for err in chosen]


#: How a message names a plain type a value may have.
_SHAPES = {str: "a text", int: "a whole number", float: "a number", bool: "true or false"}


def _tail(loc, keys: tuple) -> int:
    """How many keys of ``keys`` lie below the union member name in ``loc`` (where the alternatives part)."""
    for i, part in enumerate(loc):
        if i >= len(keys) or keys[i] != part:
            return len(keys) - i
    return 0


def _describe_params_error(err: dict, root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        return (
            f"{key_path(loc)}: {err['input']!r} is not one of {', '.join(allowed)}{did_you_mean(err['input'], allowed)}"
        )
    if err["type"].endswith("_type") and len(members := _unwrap(_annotations_at(loc, root)[0])) > 1:
        # Every alternative refused the value's shape: say the shapes it may have, not pydantic's class names.
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        shapes = [_SHAPES.get(m, getattr(m, "__name__", str(m))) for m in members if m not in models]
        shapes += [f"a mapping with {', '.join(m.model_fields)}" for m in models]
        return f"{key_path(loc)}: give {' or '.join(shapes)}; got {err.get('input')!r}"
    if err["type"] == "extra_forbidden":
        known = _keys_at(loc[:-1], root)
        return (
            f"{key_path(loc)}: not a {'parameter' if len(loc) == 1 else 'key'}{did_you_mean(str(loc[-1]), known)}; "
            "remove it or correct its "
            f"spelling (it takes {', '.join(known)})"
        )
    return _describe(err, root)


def _numeric_key(err: dict) -> str | None:
    """The message for a key YAML read as a number, or None. Inside ``{ }`` a comma separates entries, so a number
    written with a thousands separator (``{..., value: 1,000}``) is read as ``value: 1`` and a key ``000``."""
    loc, key = tuple(err["loc"]), err.get("input")
    if loc[-1:] == ("[key]",):
        parent = loc[:-2]
    elif err["type"] == "invalid_key" and loc and isinstance(loc[-1], int) and not isinstance(loc[-1], bool):
        parent, key = loc[:-1], loc[-1]
    else:
        return None
    if isinstance(key, bool) or not isinstance(key, int | float):
        return None
    return (
        f"{key_path(parent) or '(top level)'}: a key was read as the number {key!r}: inside {{ }} a comma separates "
        "entries, so a number written with a thousands separator ({..., value: 1,000}) is read as value 1 and a "
        "key 000; drop the comma (value: 1000)"
    )


def _unwrap(annotation) -> list:
    """The member types of an annotation (``X | None`` -> [X]; ``Annotated[X, ...]`` -> [X])."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _unwrap(a) if m is not type(None)]
    return [annotation]


def _annotations_at(loc: tuple, root: type[BaseModel] | None = None) -> list:
    """The annotations a key path can lead to in the configuration model, or in ``root`` (empty when it leads
    nowhere known)."""
    return _walk(loc, root)[0]


def _walk(loc: tuple, root: type[BaseModel] | None = None) -> tuple[list, tuple]:
    """(:func:`_annotations_at`, the parts of ``loc`` that are keys: without the names pydantic adds for the member
    of a union it tried, ``mapping.Income.ValueMapping.type`` -> ``mapping.Income.type``)."""
    current: list = [root or ProjectConfig]
    keys: list = []
    for part in loc:
        following = []
        members = [m for c in current for m in _unwrap(c)]
        for annotation in members:
            origin = typing.get_origin(annotation)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                field = annotation.model_fields.get(str(part))
                if field is not None:
                    following.append(
                        field.annotation if not field.metadata else typing.Annotated[field.annotation, *field.metadata]
                    )
            elif origin is dict:
                following.append(typing.get_args(annotation)[1])
            elif origin is list and isinstance(part, int):
                following.append(typing.get_args(annotation)[0])
        if not following:
            # pydantic adds the member's name for unions (``str``, ``Condition``): go on in that member. Under a
            # single type the part is a key it does not have (an unknown key).
            named = [m for m in members if getattr(m, "__name__", None) == part]
            if named and len(members) > 1:
                current = named
            elif len(members) == 1:
                keys.append(part)
            continue
        keys.append(part)
        current = following
    return current, tuple(keys)


def _keys_at(loc: tuple, root: type[BaseModel] | None = None) -> list[str]:
    """The keys a configuration block at ``loc`` accepts."""
    keys: list[str] = []
    for annotation in (m for a in _annotations_at(loc, root) for m in _unwrap(a)):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(annotation.model_fields)
    return keys


def _holds_secret(loc: tuple, root: type[BaseModel] | None = None) -> bool:
    """True when the key at ``loc`` takes a secret reference (``env:``/``file:``) or is named like a credential."""

    def secret(annotation) -> bool:
        if typing.get_origin(annotation) is typing.Annotated:
            _, *metadata = typing.get_args(annotation)
            if any(isinstance(m, AfterValidator) and m.func is check_secret_ref for m in metadata):
                return True
        return any(secret(a) for a in typing.get_args(annotation))

    named = str(loc[-1]).lower() if loc else ""
    return any(word in named for word in _SECRET_WORDS) or any(secret(a) for a in _annotations_at(loc, root))


#: Keys whose refused value may carry a credential although they also take plain values (a webhook URL).
_SECRET_WORDS = ("secret", "password", "token", "webhook", "connection_string", "account_key")
