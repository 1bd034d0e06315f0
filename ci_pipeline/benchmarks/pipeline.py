"""`ci-pipeline bench pipeline --people N`: the whole pipeline, every stage, on generated data, as `run` runs it.

The data set is generated once per people count, seed and generator version (a digest of the generator's code)
and kept in a cache folder (``--data`` names another), so repeated measurements skip generation. Each measurement
runs in a fresh folder that links to the cached sources, so no lake or sink of an earlier run is reused. The
``full_refresh`` job runs in a new process with a throwaway Dagster instance through the same path as
``ci-pipeline run``; then two incremental runs follow, as ``ci-pipeline run`` does them after a successful run: one
on the same data (an unchanged rerun), one after a 1% append (every Parquet source table of the data set gains 1%
new rows: copies of existing rows under new keys, so new customer records and new activities).

One JSON line: per stage its seconds (sum of its steps) and CPU seconds (every thread; steady on a busy machine),
the peak RSS of the process when its last step ended, the
rows it read from sources or upstream stages and the rows it wrote; the total seconds and peak RSS of the run; and
for each incremental run its seconds, per-stage seconds, what it recomputed and its share of the full run. Each
run has a process of its own, as each nightly ``ci-pipeline run`` does, so its peak memory is its own.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ci_pipeline.errors import UserError

#: The generator's code, whose digest names the cached data set: a changed generator generates again.
GENERATOR = Path(__file__).resolve().parent.parent / "generate"
#: What a run writes next to the configuration (generate.templates: lake.url and publish.sink.path); these are not
#: linked into a measurement's folder.
RUN_OUTPUTS = {"lake", "sink.sqlite", "sink.sqlite-wal", "sink.sqlite-shm", ".dagster_home"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="run every stage on generated data; per-stage time and memory")
    parser.add_argument("--people", type=int, default=20_000, help="people to generate (default 20000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--data",
        help="generated data set to use (or create) instead of the cache folder ($XDG_CACHE_HOME/ci-pipeline/bench)",
    )
    parser.add_argument("--no-rerun", action="store_true", help="skip the incremental runs (unchanged, 1%% append)")
    parser.set_defaults(func=run)


def generator_version() -> str:
    """A short digest of the generator's source files and templates."""
    digest = hashlib.sha256()
    for path in sorted(p for p in GENERATOR.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(GENERATOR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def cached_data(people: int, seed: int, folder: str | None = None) -> tuple[Path, float]:
    """The generated data set's folder (generated in a child process if missing) and the seconds generating took."""
    if folder:
        target = Path(folder)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ci-pipeline" / "bench"
        target = root / f"pipeline-{people}-seed{seed}-gen{generator_version()}"
    if (target / "ci_pipeline.yaml").exists():
        return target, 0.0
    started = time.perf_counter()
    # Generated into a side folder and renamed, so an interrupted generation is never taken for a finished one.
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ci_pipeline", "generate", "--people", str(people), "--seed", str(seed)]
    # A child process, so that the generator's memory is not counted in the pipeline's peak.
    done = subprocess.run([*command, "--out", str(partial)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"generating {people} people into {partial} failed: {done.stderr.strip()[-2000:]}")
    partial.rename(target)
    return target, time.perf_counter() - started


def run_folder(data: Path, scratch: Path) -> Path:
    """A fresh folder for one run: the configuration copied, the sources linked, no lake or sink yet."""
    for entry in data.iterdir():
        if entry.name in RUN_OUTPUTS or entry.name == "ci_pipeline.yaml":
            continue
        (scratch / entry.name).symlink_to(entry.resolve())
    shutil.copy2(data / "ci_pipeline.yaml", scratch / "ci_pipeline.yaml")
    return scratch / "ci_pipeline.yaml"


def measure(config_path: Path, incremental: bool = False) -> dict:
    """Run the ``full_refresh`` job (or, with ``incremental``, what an incremental refresh selects) on
    ``config_path`` in this process and return its figures (``assets``: how many assets ran)."""
    import dagster as dg

    from ci_pipeline.defs import STAGES, build_definitions
    from ci_pipeline.defs.launch import choose_job, execute_as_job_run, incremental_job
    from ci_pipeline.defs.resources import LakeResource
    from ci_pipeline.orchestration import MODE_TAG
    from ci_pipeline.validation import load_checked

    started = time.perf_counter()
    cpu_started = time.process_time()
    config = load_checked(config_path)
    defs = build_definitions(config)
    if incremental:
        job, mode, _ = incremental_job(defs, config, LakeResource.from_config(config).get_lake())
    else:
        job, mode = choose_job(defs, None, None)
    if job is None:
        return {
            "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "peak_rss_mb": round(peak_rss_kb() / 1024),
            "assets": 0,
            "stages": {},
        }
    graph = defs.resolve_asset_graph()
    peak_at: dict[str, int] = {}
    cpu_at: dict[str, float] = defaultdict(float)
    running: set[str] = set()
    last_cpu = [_process_cpu()]
    lock = threading.Lock()

    def on_event(record) -> None:
        # Steps run side by side on threads (and call this from their threads): the process's CPU time (every
        # thread) between two step starts or ends is shared equally by the steps running then. A figure that stays
        # put on a machine other processes keep busy, and exact when steps run one at a time.
        event = record.dagster_event
        if event is None or event.event_type_value not in {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE"}:
            return
        with lock:
            now = _process_cpu()
            for step in running:
                cpu_at[step] += (now - last_cpu[0]) / len(running)
            last_cpu[0] = now
            if event.event_type_value == "STEP_START":
                running.add(event.step_key)
            else:
                running.discard(event.step_key)
                # The peak only grows: read when a step ends, it is the peak up to and including that step.
                peak_at[event.step_key] = peak_rss_kb()

    with dg.DagsterInstance.ephemeral() as instance:
        steps = config.orchestration.executor.max_concurrent
        result = execute_as_job_run(job, instance, {MODE_TAG: mode}, {}, on_event=on_event, steps_at_once=steps)
        records = list(instance.all_logs(result.run_id))
    seconds = time.perf_counter() - started
    if not result.success:
        failed = [r.dagster_event.step_key for r in records if r.dagster_event and r.dagster_event.is_step_failure]
        raise UserError(f"{config_path}: the pipeline failed at {', '.join(failed) or 'run level'}")
    stages = stage_figures(records, graph, peak_at, [s.name for s in STAGES], cpu_at)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
        # The kernel's high-water mark can read lower later (it counts pages reclaimed since, such as mapped files
        # or lazily freed memory, only when the mark is next updated): the run's peak is the highest reading.
        "peak_rss_mb": round(max(peak_rss_kb(), *peak_at.values()) / 1024),
        "assets": len(job.asset_layer.selected_asset_keys),
        "stages": stages,
    }


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_apart(config_path: Path, incremental: bool = True) -> dict:
    """:func:`measure` in a new process, as ``ci-pipeline run`` runs each night: its peak memory is its own, and no
    run's memory is still held while the next one runs (the full run's and the append's together exceeded 24 GB
    at 1,000,000 people)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure_alone, config_path, incremental).result()


def _measure_alone(config_path: Path, incremental: bool) -> dict:
    from ci_pipeline.memory import tune_allocators

    tune_allocators()  # as the command does, before pandas and Arrow load in this new process
    return measure(config_path, incremental=incremental)


def peak_rss_kb() -> int:
    """The process's peak resident memory in KiB. Linux keeps ``ru_maxrss`` across exec, so a process started from a
    large one would report its parent's peak; the high-water mark of the process's own memory (VmHWM) starts
    afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _detach(path: Path, root: Path) -> None:
    """Make ``path`` (a file below the run folder ``root``) the run folder's own: a linked folder on its way becomes
    a real folder of links, and a linked file is unlinked, so that writing it never changes the cached data set."""
    current = root
    for part in path.relative_to(root).parts[:-1]:
        current = current / part
        if current.is_symlink():
            target = current.resolve()
            current.unlink()
            current.mkdir()
            for entry in target.iterdir():
                (current / entry.name).symlink_to(entry)
    if path.is_symlink():
        path.unlink()


def append_rows(config_path: Path, fraction: float = 0.01) -> int:
    """Append ``fraction`` new rows to every single-file Parquet source table of a run folder: evenly spaced copies
    of existing rows under new primary keys, written as the run folder's own file (the cached data set is left as
    it is). Returns the rows added."""
    import pandas as pd

    from ci_pipeline.config import load_config

    config = load_config(config_path)
    added = 0
    for source in config.sources.values():
        for table in source.tables.values():
            # Through the run folder's links (not resolved): a table outside the run folder is left alone.
            relative = Path(table.path)
            path = config_path.parent / relative
            inside = not relative.is_absolute() and ".." not in relative.parts
            if table.format != "parquet" or table.incremental is not None or not inside or not path.is_file():
                continue
            frame = pd.read_parquet(path)
            count = max(1, round(len(frame) * fraction))
            extra = frame.iloc[:: max(1, len(frame) // count)].head(count).copy()
            key = extra[table.primary_key]
            if pd.api.types.is_integer_dtype(key):
                extra[table.primary_key] = key - key.min() + frame[table.primary_key].max() + 1
            else:
                extra[table.primary_key] = key.astype(str) + "-appended"
            _detach(path, config_path.parent)
            pd.concat([frame, extra], ignore_index=True).to_parquet(path, index=False)
            added += len(extra)
    return added


def _incremental_figures(run: dict, full: dict) -> dict:
    return {
        "seconds": run["seconds"],
        "share_of_full": round(run["seconds"] / full["seconds"], 3) if full["seconds"] else None,
        "cpu_seconds": run["cpu_seconds"],
        "peak_rss_mb": run["peak_rss_mb"],
        "assets_recomputed": run["assets"],
        "stages_seconds": {name: s["seconds"] for name, s in run["stages"].items()},
        # Where the run's peak was reached (the process's high-water mark when each stage's last step ended).
        "stages_peak_rss_mb": {name: s["peak_rss_mb"] for name, s in run["stages"].items()},
    }


def stage_figures(
    records: list, graph, peak_at: dict[str, int], order: list[str], cpu_at: dict[str, float] | None = None
) -> dict:
    """Per stage (asset group): seconds of its steps, their CPU seconds (``cpu_at``: per step), peak RSS (MB) when
    its last step ended, rows in and out.

    Rows out are the row counts of the stage's assets (ingest: accepted plus quarantined rows; publish: the sink's
    tables plus the exports); rows in are the rows its assets read from assets of other stages, or, for steps that
    read sources, the rows they read (``rows_read``).
    """
    start, end, rows, read, step_of = {}, {}, {}, {}, {}
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            start[event.step_key] = record.timestamp
        elif event.event_type_value in {"STEP_SUCCESS", "STEP_FAILURE"}:
            end[event.step_key] = record.timestamp
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key
            step_of[key] = event.step_key
            count = materialization.metadata.get("dagster/row_count")
            rows[key] = count.value if count is not None else 0
            if "rows_read" in materialization.metadata:
                # A step's outputs all carry the rows the step read (ingest: the table and its quarantine).
                read[event.step_key] = materialization.metadata["rows_read"].value
    by_stage: dict[str, list] = defaultdict(list)
    for key in rows:
        by_stage[graph.get(key).group_name or key.path[0]].append(key)
    rank = {name: i for i, name in enumerate(order)}
    figures = {}
    for stage, keys in sorted(by_stage.items(), key=lambda item: rank.get(item[0], len(rank))):
        steps = {step_of[k] for k in keys}
        inputs = {p for k in keys for p in graph.get(k).parent_keys if p in rows and p not in keys}
        figures[stage] = {
            "seconds": round(sum(end.get(s, 0) - start.get(s, 0) for s in steps), 2),
            "cpu_seconds": round(sum((cpu_at or {}).get(s, 0.0) for s in steps), 2),
            "peak_rss_mb": round(max(peak_at.get(s, 0) for s in steps) / 1024),
            "rows_in": int(sum(rows[p] for p in inputs) + sum(read.get(s, 0) for s in steps)),
            "rows_out": int(sum(rows[k] for k in keys)),
        }
    return figures


def run(args) -> int:
    data, generate_s = cached_data(args.people, args.seed, args.data)
    with tempfile.TemporaryDirectory(prefix="ci-bench-pipeline-") as scratch:
        config_path = run_folder(data, Path(scratch))
        full = measure_apart(config_path, incremental=False)
        rerun = append = None
        if not args.no_rerun:
            rerun = measure_apart(config_path)
            appended = append_rows(config_path)
            append = {**measure_apart(config_path), "rows_appended": appended}
    figures = {
        "benchmark": "pipeline",
        "people": args.people,
        "seed": args.seed,
        "generator": generator_version(),
        "generate_s": round(generate_s, 1),
        **full,
    }
    if rerun is not None and append is not None:
        figures["unchanged_rerun"] = _incremental_figures(rerun, full)
        figures["append_1pct"] = {**_incremental_figures(append, full), "rows_appended": append["rows_appended"]}
    print(json.dumps(figures))
    return 0
