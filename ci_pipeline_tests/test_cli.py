"""The `ci-pipeline` command: user mistakes give one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ci_pipeline.cli import main

CONFIG = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: contact_id}
"""


def test_validate_reports_ok(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    (tmp_path / "contacts.csv").write_text("contact_id,name\nc1,Ann\n")
    assert main(["validate", str(tmp_path / "c.yaml")]) == 0
    assert "OK (1 sources, 1 tables)" in capsys.readouterr().out


def test_validate_opens_the_sources(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    assert "sources.crm.tables.contacts.path" in capsys.readouterr().err
    (tmp_path / "contacts.csv").write_text("id,name\nc1,Ann\n")
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    assert "contact_id" in capsys.readouterr().err
    assert main(["validate", "--no-sources", str(tmp_path / "c.yaml")]) == 0


def test_bundled_sample_validates(capsys):
    assert main(["validate"]) == 0


def test_validate_reports_every_problem_and_exits_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG.replace("format: csv", "format: xls").replace("owner: sales-ops", ""))
    assert main(["--config", str(tmp_path / "c.yaml"), "validate"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "sources.crm.owner: Field required" in err
    assert "sources.crm.tables.contacts.format" in err


def test_output_into_a_pipe_its_reader_closed_early_ends_quietly(monkeypatch, capsys):
    """`ci-pipeline segment preview ... | head`: no BrokenPipeError trace; the status a shell gives for SIGPIPE."""
    from ci_pipeline.commands import validate

    # Any command's output: the entry point handles it, whatever the command (this one skips the config's loading).
    monkeypatch.setattr(validate, "run", lambda args: print("\n".join(map(str, range(1000)))))
    read, write = os.pipe()
    os.close(read)
    with open(write, "w", buffering=1) as pipe:  # line-buffered, so the first line written meets the closed pipe
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main(["validate"]) == 141
        monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_user_errors_print_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ci_pipeline", "--config", str(tmp_path / "missing.yaml"), "validate"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing.yaml" in result.stderr and "does not exist" in result.stderr


def test_validate_refuses_a_hostile_file_quickly_and_without_a_traceback(tmp_path):
    from ci_pipeline_tests.test_config import BOMB, MINIMAL, _rule

    (tmp_path / "bomb.yaml").write_text(MINIMAL + BOMB)
    (tmp_path / "deep.yaml").write_text(
        MINIMAL + "segments:\n  definitions:\n    deep:\n      rules:\n        - " + _rule(600)
    )
    for name, message in (("bomb.yaml", "expand to more than 100,000 values"), ("deep.yaml", "nested more than 128")):
        result = subprocess.run(
            [sys.executable, "-m", "ci_pipeline", "validate", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,  # generous for a slow machine; the unbounded loader took minutes on the bomb
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and message in result.stderr


def test_version_and_help_import_neither_dagster_nor_pandas():
    # Answering --version or --help must not pay for importing the pipeline: the commands import it when they run.
    probe = (
        "import sys\n"
        "from ci_pipeline.cli import main\n"
        "for argv in (['--version'], ['--help'], ['run', '--help'], ['bench', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "heavy = ('dagster', 'pandas', 'numpy', 'pyarrow', 'duckdb', 'sqlalchemy')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ci-pipeline 0.1.0" in result.stdout and "suggest-mapping" in result.stdout
    assert "HEAVY []" in result.stdout


def test_a_local_bench_unify_imports_no_client_of_a_service_it_does_not_use():
    # Process start is part of the bench's figures: a local run reads files, so the Azure SDK, the HTTP client, the
    # governance store's SQLAlchemy and Dagster stay unloaded.
    probe = (
        "import sys\n"
        "from ci_pipeline.cli import build_parser\n"
        "build_parser()\n"
        "import ci_pipeline.benchmarks.unify\n"
        "from ci_pipeline.config import load_config\n"
        "load_config(None)\n"
        "unused = ('azure', 'httpx', 'sqlalchemy', 'dagster')\n"
        "print('LOADED', sorted(m for m in unused if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_config_is_accepted_before_and_after_the_sub_command(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    (tmp_path / "contacts.csv").write_text("contact_id,name\nc1,Ann\n")
    assert main(["validate", "--config", str(tmp_path / "c.yaml")]) == 0
    assert f"{tmp_path / 'c.yaml'}: OK" in capsys.readouterr().out
    # Given in both places, the one after the sub-command wins; before it, it is kept.
    assert main(["--config", str(tmp_path / "missing.yaml"), "validate", "--config", str(tmp_path / "c.yaml")]) == 0
    assert main(["--config", str(tmp_path / "missing.yaml"), "validate"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    # Nested sub-commands too.
    assert main(["segment", "refresh", "--all", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_every_sub_command_takes_config_and_every_positional_argument_has_help():
    import argparse

    from ci_pipeline.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif not action.option_strings:
                yield path, action
        if path:
            assert "--config" in parser._option_string_actions, path

    missing = [(" ".join(path), a.dest) for path, a in walk(build_parser(), []) if not a.help]
    assert not missing


def test_bench_passes_its_options_to_the_benchmark_and_other_commands_refuse_unknown_ones():
    result = subprocess.run(
        [sys.executable, "-m", "ci_pipeline", "bench", "generate", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--people" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "ci_pipeline", "validate", "--bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


def test_bench_lists_the_runnable_benchmarks_each_with_its_whole_summary():
    from ci_pipeline.cli import build_parser

    bench = next(
        action
        for action in build_parser()._subparsers._group_actions[0].choices["bench"]._subparsers._group_actions
        if action.dest == "benchmark"
    )
    assert "splink-side" not in bench.choices  # run by `bench unify --compare-splink` in a child process
    assert {"enrich-providers", "pipeline", "unify"} <= set(bench.choices)
    summaries = {choice.dest: choice.help for choice in bench._choices_actions}
    assert summaries["enrich"].endswith("first-party enrichments' speed and memory")


def test_bench_unify_refuses_people_or_a_seed_its_reused_data_were_not_generated_with(tmp_path, capsys):
    from ci_pipeline.cli import main

    data = str(tmp_path / "data")
    assert main(["bench", "unify", "--people", "40", "--seed", "3", "--data", data]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["people"] > 0
    from ci_pipeline.benchmarks.unify import _check_reused

    _check_reused(tmp_path / "data", 40, None)  # the same population: reused (the bench itself runs as above)
    _check_reused(tmp_path / "data", None, 3)
    for option, value, made in (("--people", "80", "40"), ("--seed", "7", "3")):
        assert main(["bench", "unify", option, value, "--data", data]) == 2
        err = capsys.readouterr().err
        assert f"holds data generated with {option} {made}, reused as they are, so {option} {value}" in err
    assert main(["bench", "unify", "--people", "0"]) == 2
    assert "--people 0: give at least 1 person to generate" in capsys.readouterr().err
