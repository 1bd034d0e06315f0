"""Steps side by side on threads of the run's process (ci_pipeline.defs.threaded), as `ci-pipeline run` runs them."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import dagster as dg

from ci_pipeline.defs.launch import execute_as_job_run
from ci_pipeline.defs.threaded import EXCLUSIVE_TAG, PRIORITY_TAG

SECONDS = 0.4


def _job(spans: dict, fail: set[str] = frozenset(), hooked: list | None = None) -> dg.JobDefinition:
    """Four independent assets (two of them sharing an exclusive tag) and one after all four; each records when it
    ran and on which thread."""

    def make(name: str, deps=(), tags=None):
        @dg.asset(name=name, deps=list(deps), op_tags=tags or {})
        def _asset():
            started = time.monotonic()
            time.sleep(SECONDS)
            if name in fail:
                raise RuntimeError(f"{name} failed on purpose")
            spans[name] = (started, time.monotonic(), threading.current_thread().name)

        return _asset

    exclusive = {EXCLUSIVE_TAG: "sink"}
    assets = [make("a"), make("b"), make("sink_1", tags=exclusive), make("sink_2", tags=exclusive)]
    assets.append(make("last", deps=["a", "b", "sink_1", "sink_2"]))

    @dg.success_hook
    def record(context):
        hooked.append((context.op.name, threading.current_thread().name))

    job = dg.define_asset_job("all", hooks={record} if hooked is not None else None)
    return dg.Definitions(assets=assets, jobs=[job]).resolve_job_def("all")


def _overlap(first: tuple, second: tuple) -> bool:
    return first[0] < second[1] and second[0] < first[1]


def test_ready_steps_run_two_at_a_time_but_never_two_of_one_exclusive_tag():
    spans: dict = {}
    hooked: list = []
    with dg.DagsterInstance.ephemeral() as instance:
        result = execute_as_job_run(_job(spans, hooked=hooked), instance, {}, {}, steps_at_once=2)
    assert result.success
    assert set(spans) == {"a", "b", "sink_1", "sink_2", "last"}
    assert not _overlap(spans["sink_1"], spans["sink_2"])
    names = ["a", "b", "sink_1", "sink_2"]
    pairs = [(x, y) for i, x in enumerate(names) for y in names[i + 1 :]]
    assert any(_overlap(spans[x], spans[y]) for x, y in pairs)
    # Never more than two at once, and the last one after all four.
    for moment in (s[0] for s in spans.values()):
        assert sum(s[0] <= moment < s[1] for s in spans.values()) <= 2
    assert spans["last"][0] >= max(spans[n][1] for n in names)
    # The steps ran on threads of their own; each step's hook ran once, on the run's own thread.
    assert all(s[2].startswith("step-") for s in spans.values())
    assert sorted(op for op, _ in hooked) == sorted(spans)
    assert {thread for _, thread in hooked} == {threading.current_thread().name}


def test_one_at_a_time_runs_the_steps_one_after_another():
    spans: dict = {}
    with dg.DagsterInstance.ephemeral() as instance:
        assert execute_as_job_run(_job(spans), instance, {}, {}, steps_at_once=1).success
    ordered = sorted(spans.values())
    assert all(earlier[1] <= later[0] for earlier, later in zip(ordered, ordered[1:], strict=False))


def test_a_failed_step_stops_what_depends_on_it_and_the_others_still_run_as_one_at_a_time():
    outcomes = []
    for steps in (1, 2):
        spans: dict = {}
        with dg.DagsterInstance.ephemeral() as instance:
            result = execute_as_job_run(_job(spans, fail={"b"}), instance, {}, {}, steps_at_once=steps)
            events = [r.dagster_event for r in instance.all_logs(result.run_id) if r.dagster_event]
        ended = {(e.event_type_value, e.step_key) for e in events if e.is_step_success or e.is_step_failure}
        started = {e.step_key for e in events if e.event_type_value == "STEP_START"}
        outcomes.append((result.success, set(spans), ended, started))
    assert outcomes[0] == outcomes[1]
    success, ran, ended, started = outcomes[1]
    assert not success and ran == {"a", "sink_1", "sink_2"}
    assert ("STEP_FAILURE", "b") in ended and "last" not in started


def test_ready_steps_with_a_higher_priority_start_first():
    spans: dict = {}

    def make(name: str, priority: str | None = None):
        @dg.asset(name=name, op_tags={PRIORITY_TAG: priority} if priority else {})
        def _asset():
            spans[name] = time.monotonic()
            time.sleep(SECONDS / 2)

        return _asset

    assets = [make("a"), make("b"), make("urgent_1", "1"), make("urgent_2", "2")]
    job = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("all")]).resolve_job_def("all")
    with dg.DagsterInstance.ephemeral() as instance:
        assert execute_as_job_run(job, instance, {}, {}, steps_at_once=2).success
    assert max(spans["urgent_1"], spans["urgent_2"]) < min(spans["a"], spans["b"])


def test_the_head_of_the_longest_chain_starts_first_among_steps_of_one_priority():
    """The pipeline's shape: two customer tables feed unification, which every later step waits for; four activity
    tables (first in the plan's order) feed only a step after unification. With two threads, unification starts as
    soon as its tables are in, and the activity tables are read beside it."""
    spans: dict = {}

    def make(name: str, deps=(), seconds: float = SECONDS / 4):
        @dg.asset(name=name, deps=list(deps))
        def _asset():
            started = time.monotonic()
            time.sleep(seconds)
            spans[name] = (started, time.monotonic())

        return _asset

    activity_tables = [make(f"activity_{i}") for i in range(4)]
    customer_tables = [make("customers_1"), make("customers_2")]
    unify = make("unify", deps=["customers_1", "customers_2"], seconds=SECONDS)
    placed = make("place", deps=["unify", *(a.key.path[-1] for a in activity_tables)])
    published = make("publish_profiles", deps=["unify"])
    assets = [*activity_tables, *customer_tables, unify, placed, published, make("measures", deps=["place"])]
    job = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("all")]).resolve_job_def("all")
    with dg.DagsterInstance.ephemeral() as instance:
        assert execute_as_job_run(job, instance, {}, {}, steps_at_once=2).success
    assert max(spans["customers_1"][0], spans["customers_2"][0]) < min(spans[f"activity_{i}"][0] for i in range(4))
    # Unification started before the activity tables were all read, not after them.
    assert spans["unify"][0] < max(spans[f"activity_{i}"][0] for i in range(4))


class _Payload:
    """A step's output, standing for a table: what the finished step's context still holds."""


class _Written(dg.IOManager):
    """Stores an output elsewhere (as the lake's IO manager writes Parquet) and keeps no reference to it."""

    def handle_output(self, context, obj) -> None:
        pass

    def load_input(self, context):
        return None


def test_a_finished_steps_context_and_what_it_holds_are_freed_before_the_next_step_starts():
    # Dagster's step context and its data version cache refer to each other: only the cycle collector frees a
    # finished step's context and the output it holds. Automatic collection is off here, so the executor's own
    # collection after each step is what frees it.
    outputs: list[weakref.ref] = []
    alive_when_next_ran: list[bool] = []

    @dg.asset(io_manager_key="mem")
    def table():
        payload = _Payload()
        outputs.append(weakref.ref(payload))
        return payload

    @dg.asset(deps=[table])
    def after():
        alive_when_next_ran.append(outputs[0]() is not None)

    job = dg.define_asset_job("two")
    defs = dg.Definitions(assets=[table, after], jobs=[job], resources={"mem": _Written()})
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            assert execute_as_job_run(defs.resolve_job_def("two"), instance, {}, {}, steps_at_once=2).success
    finally:
        if was_enabled:
            gc.enable()
    assert alive_when_next_ran == [False]
    assert gc.get_freeze_count() == 0  # the objects frozen for the run's collections are collectable again


def test_a_finished_steps_outputs_are_freed_though_its_context_outlives_it_through_a_check():
    # Every step of a run has a hook (the refresh state), so Dagster captures each output's value for the hooks in
    # the step's context; and a step that evaluated an asset check leaves its context referenced from Dagster's
    # own module state after the step. The captured outputs (tables of gigabytes at a million people) are let go
    # once the hooks ran, whoever still holds the context.
    outputs: list[weakref.ref] = []
    alive_when_next_ran: list[bool] = []

    @dg.multi_asset(
        outs={"table": dg.AssetOut(io_manager_key="mem")},
        check_specs=[dg.AssetCheckSpec("filled", asset="table")],
    )
    def table():
        payload = _Payload()
        outputs.append(weakref.ref(payload))
        yield dg.Output(payload, output_name="table")
        yield dg.AssetCheckResult(check_name="filled", asset_key="table", passed=True)

    @dg.asset(deps=["table"])
    def after():
        gc.collect()
        alive_when_next_ran.append(outputs[0]() is not None)

    @dg.success_hook
    def noted(context):
        # A slow hook: a step after this one that started on the step's success, before the hooks ran and the
        # outputs were let go, would find the table alive.
        time.sleep(0.5)

    job = dg.define_asset_job("two", hooks={noted})
    defs = dg.Definitions(assets=[table, after], jobs=[job], resources={"mem": _Written()})
    with dg.DagsterInstance.ephemeral() as instance:
        assert execute_as_job_run(defs.resolve_job_def("two"), instance, {}, {}, steps_at_once=2).success
    assert alive_when_next_ran == [False]
