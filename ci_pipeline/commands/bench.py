"""`ci-pipeline bench <name>`: performance figures for one stage (see ci_pipeline/benchmarks/).

A benchmark's module imports the whole stage it measures, so it is imported only when that benchmark runs; the
list of benchmarks and their one-line help come from the module names and docstrings, read without importing.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
from pathlib import Path

from ci_pipeline import benchmarks
from ci_pipeline.commands._options import add_config_option


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure a stage on generated data and print figures as JSON")
    names = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for module_info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        name = module_info.name
        tree = _module_tree(name)
        if not _registers(tree):  # a helper of a benchmark (e.g. one run in a child process), not one to call
            continue
        # The benchmark's own options (and its --help) pass through to it: see PASS_THROUGH in ci_pipeline.cli.
        # Spelt with hyphens like every command (`bench enrich-providers`); the module with underscores.
        sub = names.add_parser(name.replace("_", "-"), help=_summary(tree), add_help=False)
        sub.set_defaults(func=run, pass_through=[])


def _module_tree(name: str) -> ast.Module:
    return ast.parse((Path(benchmarks.__path__[0]) / f"{name}.py").read_text(encoding="utf-8"))


def _registers(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.FunctionDef) and node.name == "register" for node in tree.body)


def _summary(tree: ast.Module) -> str:
    """The first paragraph of the benchmark's docstring after its usage: "`ci-pipeline bench x ...`: what it
    measures." -> "what it measures"."""
    first = " ".join((ast.get_docstring(tree) or "").split("\n\n")[0].split())
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
