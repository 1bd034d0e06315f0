"""Reading the configuration YAML with bounds, so a hostile file is refused in milliseconds, not minutes.

A YAML alias copies a whole subtree where it is used: nine lines of nested aliases ("billion laughs") stand for
a billion values, and everything that walks the loaded document (validation, pydantic) would walk all of them.
Deep nesting makes the recursive parts of the loader and of the rule parsers overflow Python's stack. Both are
bounded here, before anything walks the document, and each refusal names the line and key path.

The loader also records the line of every key path (``sources.crm.tables.contacts.path`` -> 9) so problems
found later can say where in the file to look.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: Nesting of mappings and lists allowed anywhere in the file (the deepest documented setting, segment rules at
#: their own limit of 50 levels, needs about 110).
MAX_YAML_DEPTH = 128
#: Values the document may stand for once every alias is expanded (a large real configuration has a few thousand).
MAX_EXPANDED_VALUES = 100_000


class YamlLimitError(ValueError):
    """The document is nested too deeply or its aliases expand too far; the message names line and key path."""


class DuplicateKeyError(ValueError):
    """A mapping of the document gives one key twice (YAML would keep the last silently); ``problems`` names each
    key path with both lines."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses nesting beyond :data:`MAX_YAML_DEPTH` and keeps the key path."""

    def __init__(self, stream):
        super().__init__(stream)
        self._path: list[str] = []

    def compose_node(self, parent, index):
        if parent is None:
            part = None
        elif isinstance(index, ScalarNode):
            part = f".{index.value}"
        elif isinstance(index, int):
            part = f"[{index}]"
        else:
            part = ".(key)"
        if part is not None:
            self._path.append(part)
        try:
            if len(self._path) > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlLimitError(
                    f"line {mark.line + 1}: {_shown(self._path)}: values are nested more than {MAX_YAML_DEPTH} "
                    "levels deep; flatten the structure (segment rules nest at most 50 levels, see "
                    "docs/configuration.md, 'Limits')"
                )
            return super().compose_node(parent, index)
        finally:
            if part is not None:
                self._path.pop()


def _shown(parts: list[str]) -> str:
    path = "".join(parts).lstrip(".")
    return path if len(path) <= 160 else f"{path[:80]}...{path[-60:]}"


def load_yaml(text: str) -> tuple[Any, dict[str, int]]:
    """Parse one YAML document safely.

    Returns:
        The document (plain dicts, lists and scalars) and key path -> 1-based line.

    Raises:
        yaml.YAMLError: the text is not valid YAML.
        YamlLimitError: nesting or alias expansion beyond the documented bounds.
        DuplicateKeyError: a key given twice in one mapping (``method: rules`` above a pasted
            ``method: probabilistic``: the first would be dropped without a word).
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_expansion(node)
        lines = _key_lines(node)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: Node) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_EXPANDED_VALUES` values or the depth bound.

    Sizes and heights are computed once per node (an alias is the same node object reached again), without
    recursion, so the check itself costs time proportional to the text, not to the expansion.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            on_path.discard(key)
            line = node.start_mark.line + 1
            if size[key] > MAX_EXPANDED_VALUES:
                raise YamlLimitError(
                    f"line {line}: the aliases (*name) used here expand to more than {MAX_EXPANDED_VALUES:,} values; "
                    "a configuration never needs that many: write the values out or use fewer aliases"
                )
            if height[key] > MAX_YAML_DEPTH:
                raise YamlLimitError(
                    f"line {line}: with its aliases expanded, this value is nested more than {MAX_YAML_DEPTH} levels "
                    "deep; use fewer nested aliases"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlLimitError(
                f"line {node.start_mark.line + 1}: an alias refers to a value that contains it (a cycle); remove it"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _key_lines(root: Node) -> dict[str, int]:
    """Key path -> line of its value, in the spelling problems use (``a.b[0].c``).

    Raises:
        DuplicateKeyError: a mapping gives a key twice.
    """
    lines: dict[str, int] = {}
    twice: list[str] = []
    stack: list[tuple[str, Node]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if path:
            lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            seen: dict[str, int] = {}
            for key_node, value in node.value:
                if isinstance(key_node, ScalarNode):
                    name = f"{path}.{key_node.value}" if path else str(key_node.value)
                    line = key_node.start_mark.line + 1
                    if key_node.value in seen and key_node.value != "<<":
                        twice.append(
                            f"line {line}: {name} is given twice (lines {seen[key_node.value]} and {line}); YAML keeps "
                            "only the last one without a word: remove one"
                        )
                    seen.setdefault(key_node.value, line)
                    lines.setdefault(name, line)
                    stack.append((name, value))
        elif isinstance(node, SequenceNode):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(node.value))
    if twice:
        raise DuplicateKeyError(sorted(twice, key=line_number))
    return lines


def line_of(problem: str, lines: dict[str, int]) -> int | None:
    """The line of the longest key path a problem message starts with (``unify.tables[0].x: ...``), if known."""
    head = problem.split(": ", 1)[0].split(" ", 1)[0]
    # pydantic writes list positions as ``.0``; the file's paths use ``[0]``.
    head = re.sub(r"\.(\d+)(?=[.\[]|$)", r"[\1]", head)
    while head:
        if head in lines:
            return lines[head]
        cut = max(head.rfind("."), head.rfind("["))
        if cut <= 0:
            return None
        head = head[:cut]
    return None


def line_number(located: str) -> int | None:
    """The N of a problem :func:`with_lines` prefixed with ``line N:``."""
    head = located.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else None


def with_lines(problems: list[str], lines: dict[str, int]) -> list[str]:
    """Each problem prefixed with ``line N:`` when its key path is in the file."""
    out = []
    for problem in problems:
        line = None if problem.startswith("line ") else line_of(problem, lines)
        out.append(problem if line is None else f"line {line}: {problem}")
    return out
