"""Common Data Model folders: ``model.json`` (CDM folder v1) and ``*.manifest.cdm.json`` with entity documents.

Parsing only describes where an entity's rows are and how they are typed; reading the partitions is done by the
CSV and Parquet readers.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ci_pipeline.config.sources import CsvOptions
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.storage import SourceLocation
from ci_pipeline.ingest.types import strptime_format

_TYPES = {
    "string": "string",
    "char": "string",
    "int64": "int64",
    "biginteger": "int64",
    "integer": "int64",
    "int32": "int64",
    "int16": "int64",
    "smallinteger": "int64",
    "byte": "int64",
    "double": "double",
    "float": "double",
    "decimal": "decimal",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "datetimeoffset": "datetime",
    "time": "time",
    "guid": "guid",
    "json": "json",
}
_DATE_ANNOTATIONS = {"ci:customdateformat": "date", "ci:customtimestampformat": "datetime"}


@dataclass
class Partition:
    """One data file of an entity."""

    location: SourceLocation
    format: str  # csv | parquet
    csv: CsvOptions = field(default_factory=CsvOptions)


@dataclass
class Entity:
    """An entity's columns (in order), their CDM types and custom formats, and its partitions."""

    name: str
    columns: list[str]
    types: dict[str, str]
    formats: dict[str, str]
    partitions: list[Partition]


def read_entity(location: SourceLocation, entity: str, partitions: bool = True) -> Entity:
    """Describe one entity of a ``model.json`` or ``*.manifest.cdm.json``.

    Args:
        location: the document.
        entity: the entity's name (case-insensitive).
        partitions: False when the rows are found elsewhere (the incremental layout): partition patterns are not
            expanded and listed partitions need not exist; their CSV settings still describe the files.

    Raises:
        UserError: the document is not valid JSON, the entity is not in it, or a partition it lists is missing.
    """
    document = _load_json(location)
    if location.path.endswith("model.json"):
        found = _from_model_json(location, document, entity)
    elif location.path.endswith(".manifest.cdm.json"):
        found = _from_manifest(location, document, entity, partitions)
    else:
        raise UserError(
            f"{location.url}: a CDM table's path must be a model.json or a *.manifest.cdm.json file; fix the path"
        )
    for part in found.partitions if partitions else []:
        if not part.location.exists():
            raise UserError(
                f"{location.url}: entity {found.name} lists partition {part.location.url}, which does not exist; "
                "restore the file or rewrite the CDM document"
            )
    return found


def _load_json(location: SourceLocation) -> dict:
    location.require("CDM document", "path")
    try:
        document = json.loads(location.read_bytes().decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{location.url}: not valid JSON ({exc}); fix or regenerate the CDM document") from None
    if not isinstance(document, dict):
        raise UserError(f"{location.url}: a CDM document must be a JSON object")
    return document


def _pick(items: list[dict], key: str, wanted: str, location: SourceLocation) -> dict:
    for item in items:
        if str(item.get(key, "")).lower() == wanted.lower():
            return item
    names = ", ".join(str(i.get(key)) for i in items) or "none"
    raise UserError(
        f"{location.url}: no entity named {wanted!r} (entities: {names}); set 'entity' on the table to one of them"
    )


# -- model.json ----------------------------------------------------------------------------------------------------
def _from_model_json(location: SourceLocation, document: dict, wanted: str) -> Entity:
    entity = _pick(document.get("entities", []), "name", wanted, location)
    entity_formats = _annotation_formats(entity.get("annotations", []))
    columns, types, formats = [], {}, {}
    for attribute in entity.get("attributes", []):
        name = attribute["name"]
        columns.append(name)
        types[name] = _kind(attribute.get("dataType"))
        own = _annotation_formats(attribute.get("annotations", []))
        fmt = own.get(types[name]) or entity_formats.get(types[name])
        if fmt:
            formats[name] = strptime_format(fmt)
    partitions = []
    for part in entity.get("partitions", []):
        settings = part.get("fileFormatSettings") or {}
        target = _partition_location(location, part["location"])
        kind = settings.get("$type", "")
        if "parquet" in kind.lower() or target.path.endswith(".parquet"):
            partitions.append(Partition(target, "parquet"))
            continue
        partitions.append(
            Partition(
                target,
                "csv",
                CsvOptions(
                    header=bool(settings.get("columnHeaders", False)),
                    delimiter=settings.get("delimiter", ","),
                    encoding=_encoding(settings.get("encoding")),
                ),
            )
        )
    return Entity(entity["name"], columns, types, formats, partitions)


def _annotation_formats(annotations: list[dict]) -> dict[str, str]:
    found = {}
    for note in annotations or []:
        kind = _DATE_ANNOTATIONS.get(str(note.get("name", "")).lower())
        if kind and note.get("value"):
            found[kind] = note["value"]
    return found


def _partition_location(document: SourceLocation, location: str) -> SourceLocation:
    """A partition location: relative to the document, an absolute local path, or an account URL mapped onto the
    same storage.

    ``https://<account>.dfs.core.windows.net/<container>/<path>`` becomes ``<container>/<path>`` on the lake's Azure
    filesystem; the emulator's ``http://host:port/<account>/<container>/<path>`` likewise.
    """
    parsed = urlparse(location)
    if parsed.scheme in ("http", "https"):
        parts = parsed.path.lstrip("/").split("/")
        if not parsed.netloc.endswith(".core.windows.net"):
            parts = parts[1:]  # the emulator puts the account name first
        path = "/".join(parts)
        if document.url.startswith(("abfs://", "abfss://", "az://")):
            return SourceLocation(document.fs, path, f"abfs://{path}")
        return SourceLocation(document.fs, path, location)
    if parsed.scheme and "://" in location:
        return SourceLocation(document.fs, location.split("://", 1)[1], location)
    if location.startswith("/") and "file" in _protocols(document.fs) and document.fs.exists(location):
        # An absolute path of a local folder (what ci_pipeline's own CSV exports write); a path from the root of a
        # CDM namespace ("/Customer/part.csv") is otherwise read next to the document, below.
        return SourceLocation(document.fs, location, location)
    return document.sibling(_corpus_path(location))


def _protocols(fs) -> tuple:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _corpus_path(location: str) -> str:
    # CDM corpus paths may carry an adapter prefix ("local:/Customer/part.csv", "adls:/..."): the rest is relative
    # to the folder holding the document.
    match = re.match(r"^[A-Za-z][A-Za-z0-9_-]*:/(?!/)", location)
    if match:
        location = location[match.end() :]
    return location.lstrip("/")


def _encoding(value: str | None) -> str:
    return (value or "utf-8").lower().replace("utf8", "utf-8")


def _kind(data_type) -> str:
    if isinstance(data_type, dict):
        data_type = data_type.get("dataTypeReference") or data_type.get("name") or "string"
    return _TYPES.get(str(data_type or "string").lower(), "string")


# -- manifest ------------------------------------------------------------------------------------------------------
def _from_manifest(location: SourceLocation, document: dict, wanted: str, expand: bool) -> Entity:
    declared = _pick(document.get("entities", []), "entityName", wanted, location)
    name = declared["entityName"]
    entity_path = _corpus_path(declared.get("entityPath", f"{name}.cdm.json/{name}"))
    doc_path, _, definition_name = entity_path.partition(".cdm.json")
    doc_location = location.sibling(doc_path + ".cdm.json")
    definition_name = definition_name.strip("/") or name
    entity_doc = _load_json(doc_location)
    definition = _pick(entity_doc.get("definitions", []), "entityName", definition_name, doc_location)
    entity_formats = _trait_formats(definition.get("exhibitsTraits", []))
    columns, types, formats = [], {}, {}
    for attribute in _attributes(definition.get("hasAttributes", [])):
        column = attribute["name"]
        columns.append(column)
        types[column] = _kind(attribute.get("dataType"))
        own = _trait_formats(attribute.get("appliedTraits", []))
        fmt = own.get(types[column]) or entity_formats.get(types[column])
        if fmt:
            formats[column] = strptime_format(fmt)

    partitions = [
        _manifest_partition(location.sibling(_corpus_path(p["location"])), p.get("exhibitsTraits", []))
        for p in declared.get("dataPartitions", [])
    ]
    for pattern in declared.get("dataPartitionPatterns", []) if expand else []:
        root = location.sibling(_corpus_path(pattern.get("rootLocation", "")))
        for path in _pattern_files(root, pattern):
            partitions.append(_manifest_partition(root.with_path(path), pattern.get("exhibitsTraits", [])))
    return Entity(name, columns, types, formats, partitions)


def _attributes(items: list) -> list[dict]:
    found = []
    for item in items:
        if isinstance(item, dict) and "name" in item:
            found.append(item)
        elif isinstance(item, dict) and isinstance(item.get("attributeGroupReference"), dict):
            found.extend(_attributes(item["attributeGroupReference"].get("members", [])))
    return found


def _trait_formats(traits: list) -> dict[str, str]:
    found = {}
    for trait in traits or []:
        if not isinstance(trait, dict):
            continue
        ref = str(trait.get("traitReference", "")).lower()
        if not ref.startswith("is.formatted.date"):
            continue
        kind = "date" if ref == "is.formatted.date" else "datetime"
        for argument in trait.get("arguments", []):
            value = argument.get("value") if isinstance(argument, dict) else argument
            if isinstance(value, str) and value:
                found[kind] = value
                break
    return found


def _manifest_partition(target: SourceLocation, traits: list) -> Partition:
    refs = {str(t.get("traitReference", "")).lower(): t for t in traits if isinstance(t, dict)}
    if "is.partition.format.parquet" in refs or (
        "is.partition.format.csv" not in refs and target.path.endswith(".parquet")
    ):
        return Partition(target, "parquet")
    args = {}
    for argument in refs.get("is.partition.format.csv", {}).get("arguments", []):
        if isinstance(argument, dict):
            args[str(argument.get("name", "")).lower()] = str(argument.get("value", ""))
    return Partition(
        target,
        "csv",
        CsvOptions(
            header=args.get("columnheaders", "false").lower() == "true",
            delimiter=args.get("delimiter", ",") or ",",
            encoding=_encoding(args.get("encoding")),
        ),
    )


def _pattern_files(root: SourceLocation, pattern: dict) -> list[str]:
    if not root.exists():
        raise UserError(f"{root.url}: the partition pattern's rootLocation does not exist; fix the manifest")
    if pattern.get("globPattern"):
        glob = pattern["globPattern"].lstrip("/")
        return [p for p in root.glob(glob) if not posixpath.basename(p).startswith((".", "_"))]
    regex = re.compile(pattern.get("regularExpression") or ".*")
    base = root.path.rstrip("/") + "/"
    found = []
    for path in root.find():
        relative = path[len(base) :] if path.startswith(base) else path
        if regex.fullmatch(relative) or regex.fullmatch("/" + relative):
            found.append(path)
    return found
