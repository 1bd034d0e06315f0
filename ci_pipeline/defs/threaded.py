"""Steps of a run on threads of the run's own process: the in-process executor, with up to N steps at a time.

`ci-pipeline run` executes a run in its own process (no process per step: on a small machine starting one costs
more than many steps take). One step at a time leaves one of two cores idle while, for example, the models train
and the enrichments, the measures and the first sink tables wait for them, although none needs the others. Here
the steps the plan has ready run side by side on threads (most of their work is in Arrow, DuckDB, NumPy, SQLite and
scikit-learn, which release Python's lock). Events, hooks and the plan's bookkeeping stay on the run's thread, in
the order each step gives them, exactly as the in-process executor handles them; a step's own work is unchanged.

Steps that write one database serialise there anyway and would wait on its lock: a step tagged with
:data:`EXCLUSIVE_TAG` never runs beside another step with the same tag value.

After each step the run's thread frees the reference cycles the step left (:func:`_collect_step_garbage`): a
finished step's context holds its inputs and outputs, and only the cycle collector frees it.
"""

from __future__ import annotations

import gc
import os
import queue
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import dagster as dg
import dagster._check as check
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import _default_sort_key
from dagster._core.execution.plan.execute_plan import (
    _handle_compute_log_setup_error,
    _handle_compute_log_teardown_error,
    _trigger_hook,
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.in_process import InProcessExecutor

#: Op tag: steps with the same value never run at the same time (the sink's tables: one SQLite file).
EXCLUSIVE_TAG = "ci_pipeline/exclusive"
#: Its value on the steps that hold every customer's features and models at once (predictions, enrichment): side by
#: side they raised the peak of a run of 1,000,000 people from about 14 to 16 GB.
CUSTOMER_MODELS = "customer_models"
#: Dagster's op tag: of the ready steps, those with the higher number start first (default 0).
PRIORITY_TAG = "dagster/priority"
_DONE = object()


class ThreadedInProcessExecutor(InProcessExecutor):
    """:class:`InProcessExecutor` with up to ``max_concurrent`` steps at a time on threads."""

    def __init__(self, retries, max_concurrent: int):
        super().__init__(retries)
        self.max_concurrent = check.int_param(max_concurrent, "max_concurrent")

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        pid = os.getpid()
        keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {pid}), up to {self.max_concurrent} at a time on threads",
            event_specific_data=EngineEventData.in_process(pid, keys),
        )

        def iterator(job_context: PlanExecutionContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
            with InstanceConcurrencyContext(job_context.instance, job_context.dagster_run) as concurrency:
                yield from _threaded_steps(job_context, execution_plan, concurrency, self.max_concurrent)

        yield from ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=iterator,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=self.step_dependency_config,
            ),
        )
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {pid})",
            event_specific_data=EngineEventData.in_process(pid, keys),
        )


def threaded_executor(max_concurrent: int) -> dg.ExecutorDefinition:
    """The executor of runs that `ci-pipeline run` executes in its own process: ``max_concurrent`` steps at a time
    on threads (1: one after another, as Dagster's in-process executor)."""

    @dg.executor(name="in_process_threads")
    def _threads(_init_context) -> InProcessExecutor:
        return ThreadedInProcessExecutor(RetryMode.ENABLED, max_concurrent)

    return _threads


def _exclusive(step) -> str | None:
    return step.tags.get(EXCLUSIVE_TAG) if step.tags else None


def _run_step(step_context, events: queue.Queue) -> None:
    """A step's events into ``events``, then :data:`_DONE` (or the exception that ended the step's sequence)."""
    try:
        for event in dagster_event_sequence_for_step(step_context):
            events.put((step_context.step.key, event))
        events.put((step_context.step.key, _DONE))
    except BaseException as exc:  # noqa: BLE001 - handed to the run's thread, which raises it
        events.put((step_context.step.key, exc))


def _startable(active, running: dict, held: list, workers: int) -> list:
    """The steps to start now: held ones whose exclusive tag is free first, then ready ones from the plan, up to
    ``workers`` running; a ready step whose tag is taken joins ``held``."""
    busy = {_exclusive(context.step) for context, _, _ in running.values()} - {None}
    chosen = []

    def admit(step) -> bool:
        tag = _exclusive(step)
        if tag in busy:
            return False
        if tag is not None:
            busy.add(tag)
        chosen.append(step)
        return True

    for step in list(held):
        if len(running) + len(chosen) < workers and admit(step):
            held.remove(step)
    while len(running) + len(chosen) < workers and not active.is_complete:
        step = active.get_next_step()
        if step is None:
            break
        if not admit(step):
            held.append(step)
    return chosen


def _steps_on_threads(job_context: PlanExecutionContext, active, workers: int) -> Iterator[DagsterEvent]:
    """Start the plan's ready steps on threads, up to ``workers`` at once, and hand on their events in the order each
    step gives them; a finished step's hooks run here, on the run's thread."""
    events: queue.Queue = queue.Queue()
    running: dict[str, tuple] = {}  # step key -> (step context, its events so far, its thread)
    held: list = []  # steps taken from the plan that wait for a running step with the same exclusive tag
    while running or held or not active.is_complete:
        for step in _startable(active, running, held, workers):
            context = job_context.for_step(step, active.get_known_state())
            thread = threading.Thread(target=_run_step, args=(context, events), name=f"step-{step.key}", daemon=True)
            running[step.key] = (context, [], thread)
            thread.start()
        yield from active.concurrency_event_iterator(job_context)
        if not running:
            active.sleep_til_ready()
            continue
        key, event = events.get()
        context, seen, thread = running[key]
        if isinstance(event, BaseException):
            raise event
        if event is not _DONE:
            seen.append(event)
            yield event
            # A step's end (success, failure, retry) reaches the plan when its thread is done (below), so the steps
            # after it start on the next pass, once its hooks ran and its outputs were let go, not while they're held.
            if not _ends_step(event):
                active.handle_event(event)
            continue
        del running[key]
        for end in [e for e in seen if _ends_step(e)]:
            active.handle_event(end)
        active.verify_complete(job_context, key)
        for skipped in active.plan_events_iterator(job_context):
            seen.append(skipped)
            yield skipped
        yield from _trigger_hook(context, seen)
        _release_outputs(context)
        thread.join()  # it has put its last event: its frame lets go of the context now
        del context, seen, thread
        _collect_step_garbage()


def _ends_step(event: DagsterEvent) -> bool:
    ended = (event.is_step_success, event.is_step_failure, event.is_step_up_for_retry, event.is_resource_init_failure)
    return any(ended)


def _release_outputs(context) -> None:
    """Let go of the output values Dagster captured in a finished step's context for its hooks, once they ran.

    Every step of a run has a hook (the refresh state), so each output's value is kept in the step's context; and a
    step that evaluated an asset check leaves its context referenced from Dagster's module state after the step, so
    collecting the context's cycles did not free it. Its captured tables (unification's, gigabytes at a million
    people) stayed in memory into the steps after it and raised the run's peak."""
    for captured in (context.step_output_capture, context.step_output_metadata_capture):
        if captured is not None:
            captured.clear()


def _freeze_long_lived() -> None:
    """Collect what is garbage now, then leave every object that exists before the first step out of the collections
    that follow each step (Python's and Dagster's modules, the definitions: most of the process's objects)."""
    gc.collect()
    gc.freeze()


def _collect_step_garbage() -> None:
    """Free the reference cycles a finished step left, with what they hold.

    Dagster's step context and its data version cache refer to each other, so a finished step's context is freed
    only by Python's cycle collector, and with it whatever the context still holds (the step's loaded inputs and
    outputs: at 100,000 people up to 190 MB a step). The collector's full passes are rare when most new objects
    are arrays, so without this the memory of several finished steps was held at once and the run's peak was
    reached with them. Objects from before the first step are frozen (:func:`_freeze_long_lived`), so a pass looks
    only at the run's own objects (about 20 ms a step at 100,000 people)."""
    gc.collect()


def critical_path_first(plan: ExecutionPlan) -> Callable[[ExecutionStep], tuple[float, int, int]]:
    """The order in which ready steps start: a higher ``dagster/priority`` tag first (Dagster's own order), then the
    step with the longest chain of steps after it in this plan, then the one more steps wait for.

    Dagster starts ready steps of one priority in the plan's order, so the ingest of activity tables could hold
    both threads while unification, which everything after it waits for, waited for the last customer table.
    Starting the head of the longest remaining chain first (list scheduling by critical path, every step counted
    as one; of two chains as long, the step with more steps after it) lets unification begin once its own tables
    are in, while the other tables are read beside it. The order needs no timings and is the same on every run of
    one plan."""
    steps = plan.get_steps_to_execute_in_topo_order()
    downstream: dict[str, list[str]] = defaultdict(list)
    for step in steps:
        for upstream in step.get_execution_dependency_keys():
            downstream[upstream].append(step.key)
    chain: dict[str, int] = {}
    after: dict[str, set[str]] = {}
    for step in reversed(steps):
        children = [d for d in downstream[step.key] if d in chain]
        chain[step.key] = 1 + max((chain[d] for d in children), default=0)
        after[step.key] = set(children).union(*(after[d] for d in children))

    def key(step: ExecutionStep) -> tuple[float, int, int]:
        return (_default_sort_key(step), -chain.get(step.key, 0), -len(after.get(step.key, ())))

    return key


def _threaded_steps(
    job_context: PlanExecutionContext, plan: ExecutionPlan, concurrency, workers: int
) -> Iterator[DagsterEvent]:
    """``inner_plan_execution_iterator`` of Dagster's in-process executor, with up to ``workers`` steps at once."""
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in plan.get_steps_to_execute_in_topo_order()]
    with (
        plan.start(
            retry_mode=job_context.retry_mode,
            sort_key_fn=critical_path_first(plan),
            instance_concurrency_context=concurrency,
            step_dependency_config=job_context.step_dependency_config,
        ) as active,
        ExitStack() as capture_stack,
    ):
        # The logs of the whole process are captured once, as the in-process executor does.
        try:
            log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
            log_context = capture_stack.enter_context(compute_log_manager.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        except Exception:
            yield from _handle_compute_log_setup_error(job_context, sys.exc_info())
        _freeze_long_lived()
        try:
            yield from _steps_on_threads(job_context, active, workers)
        finally:
            gc.unfreeze()
        try:
            capture_stack.close()
        except Exception:
            yield from _handle_compute_log_teardown_error(job_context, sys.exc_info())
