"""`ci-pipeline bench <name>`: performance figures for one stage (see ci_pipeline/benchmarks/).

A benchmark's module imports the whole stage it measures, so it is imported only when that benchmark runs; the
list of benchmarks and their one-line help come from the module names and docstrings, read without importing.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import io
import pkgutil
import re
import tokenize
from pathlib import Path

from ci_pipeline import benchmarks
from ci_pipeline.commands._options import add_config_option


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure a stage on generated data and print figures as JSON")
    names = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for module_info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        name = module_info.name
        text = (Path(benchmarks.__path__[0]) / f"{name}.py").read_text(encoding="utf-8")
        if not _registers(text):  # a helper of a benchmark (e.g. one run in a child process), not one to call
            continue
        # The benchmark's own options (and its --help) pass through to it: see PASS_THROUGH in ci_pipeline.cli.
        # Spelt with hyphens like every command (`bench enrich-providers`); the module with underscores.
        sub = names.add_parser(name.replace("_", "-"), help=_summary(_docstring(text)), add_help=False)
        sub.set_defaults(func=run, pass_through=[])


# Every command line registers the benchmarks, so their sources are read, not parsed whole (a tenth of the time).
def _registers(text: str) -> bool:
    """Whether the module defines ``register`` at its top level."""
    return re.search(r"^def register\(", text, re.MULTILINE) is not None


def _docstring(text: str) -> str:
    """The module's docstring, cleaned as ``ast.get_docstring`` cleans it: its first token, when that is a string."""
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
            continue
        return inspect.cleandoc(ast.literal_eval(token.string)) if token.type == tokenize.STRING else ""
    return ""


def _summary(docstring: str) -> str:
    """The first paragraph of the benchmark's docstring after its usage: "`ci-pipeline bench x ...`: what it
    measures." -> "what it measures"."""
    first = " ".join(docstring.split("\n\n")[0].split())
    return first.split("`: ", 1)[-1].rstrip(".")


def run(args) -> int:
    """Import the chosen benchmark, parse its own options and run it."""
    module = importlib.import_module(f"{benchmarks.__name__}.{args.benchmark.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog="ci-pipeline bench")
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    module.register(subparsers)
    add_config_option(subparsers)
    given = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in {"func", "pass_through"}})
    parsed = parser.parse_args([args.benchmark, *args.pass_through], namespace=given)
    return parsed.func(parsed)
