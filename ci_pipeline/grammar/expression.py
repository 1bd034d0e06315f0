"""Arithmetic between measures, parsed into a small typed tree (never evaluated as Python).

The configuration checks an expression with this parser and the measures stage evaluates the tree
(:func:`ci_pipeline.measures.expression.evaluate`).

Grammar: ``expr := term (('+'|'-') term)*``, ``term := factor (('*'|'/') factor)*``,
``factor := NUMBER | NAME | '(' expr ')' | '-' factor``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Levels of parentheses and signs an ``expression`` may nest (docs/configuration.md, "Limits"): the parser is
#: recursive, and no real formula comes near this.
MAX_EXPRESSION_DEPTH = 50

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\S))")


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Negate:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Number | Ref | Negate | Binary


class ExpressionError(ValueError):
    """The expression text is not valid arithmetic over measure names."""


def parse(text: str) -> Node:
    """Parse an expression such as ``total_spend / order_count`` into a tree.

    Examples:
        >>> parse("a / (b + 2)")
        Binary(op='/', left=Ref(name='a'), right=Binary(op='+', left=Ref(name='b'), right=Number(value=2.0)))
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        number, name, symbol = match.groups()
        if number is not None:
            tokens.append(("num", number))
        elif name is not None:
            tokens.append(("name", name))
        elif symbol in "+-*/()":
            tokens.append(("op", symbol))
        else:
            raise ExpressionError(f"unexpected character {symbol!r} at position {match.start(3) + 1}")
        pos = match.end()
    parser = _Parser(tokens)
    node = parser.expr()
    if parser.pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.pos][1]!r} after a complete expression")
    return node


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self):
        token = self.peek()
        self.pos += 1
        return token

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            node = Binary(self.take()[1], node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek() in (("op", "*"), ("op", "/")):
            node = Binary(self.take()[1], node, self.factor())
        return node

    def factor(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            return Number(float(value))
        if kind == "name":
            return Ref(value)
        if (kind, value) == ("op", "-"):
            return Negate(self.factor())
        if (kind, value) == ("op", "("):
            node = self.expr()
            if self.take() != ("op", ")"):
                raise ExpressionError("a '(' is not closed")
            return node
        raise ExpressionError("the expression ends too early" if kind == "end" else f"unexpected {value!r}")


def references(node: Node) -> set[str]:
    """Every measure name an expression uses."""
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, Negate):
        return references(node.operand)
    if isinstance(node, Binary):
        return references(node.left) | references(node.right)
    return set()


def expression_depth(text: str) -> int:
    """How deep an expression nests: open parentheses plus the unary signs in front of them, at the deepest point."""
    depth = deepest = 0
    opened: list[int] = []
    signs = 0
    for char in text:
        if char == "(":
            opened.append(signs)
            depth += 1 + signs
            signs = 0
        elif char == ")":
            depth -= 1 + (opened.pop() if opened else 0)
        elif char == "-":
            signs += 1
        elif not char.isspace() and char not in "+*/":
            signs = 0
        deepest = max(deepest, depth + signs)
    return deepest
