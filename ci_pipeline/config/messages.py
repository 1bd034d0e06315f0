"""Pydantic's errors in the configuration's words: ``key.path: what is wrong; the fix``, the near miss of an unknown
key, never a secret's value. For the whole configuration (:func:`ci_pipeline.config.load_config`) and for a block
validated on its own (an enrichment's ``params``, :func:`describe_errors`); no module of the configuration's models
is imported here, so any of them may use it."""

from __future__ import annotations

import difflib
import re
import types
import typing

from pydantic import AfterValidator, BaseModel, ValidationError

from ci_pipeline.config.base import check_secret_ref, did_you_mean, pattern_problem
from ci_pipeline.errors import key_path


def describe(err: dict, root: type[BaseModel]) -> str:
    """One pydantic error as ``key.path: what is wrong; the fix``. A secret's value is never repeated. ``root``:
    the model the location starts at (the whole configuration's, or a block's validated on its own)."""
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
    return describe(err, root)


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


def _annotations_at(loc: tuple, root: type[BaseModel]) -> list:
    """The annotations a key path can lead to in model ``root`` (empty when it leads nowhere known)."""
    return _walk(loc, root)[0]


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[list, tuple]:
    """(:func:`_annotations_at`, the parts of ``loc`` that are keys: without the names pydantic adds for the member
    of a union it tried, ``mapping.Income.ValueMapping.type`` -> ``mapping.Income.type``)."""
    current: list = [root]
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


def _keys_at(loc: tuple, root: type[BaseModel]) -> list[str]:
    """The keys a configuration block at ``loc`` accepts."""
    keys: list[str] = []
    for annotation in (m for a in _annotations_at(loc, root) for m in _unwrap(a)):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(annotation.model_fields)
    return keys


def _holds_secret(loc: tuple, root: type[BaseModel]) -> bool:
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
