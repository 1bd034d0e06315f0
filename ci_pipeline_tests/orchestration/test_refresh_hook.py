"""The refresh hook's reading of a run's materializations: each step gets its own, and each event is read once."""

from __future__ import annotations

import dagster as dg

from ci_pipeline.defs.launch import execute_as_job_run
from ci_pipeline.defs.refresh import _RunMaterializations


class _Counting:
    """The instance, counting the materialization records it hands out."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance, self.handed = instance, 0

    def get_records_for_run(self, *args, **kwargs):
        found = self.instance.get_records_for_run(*args, **kwargs)
        self.handed += len(found.records)
        return found


def test_each_step_gets_the_materializations_it_stored_each_read_from_the_instance_once():
    materializations = _RunMaterializations()
    got: dict[str, list[str]] = {}
    counting: list[_Counting] = []

    @dg.asset
    def first():
        return 1

    @dg.multi_asset(outs={"left": dg.AssetOut(), "right": dg.AssetOut()}, deps=[first])
    def both():
        return 2, 3

    @dg.asset(deps=["left"])
    def last():
        return 4

    @dg.success_hook
    def record(context: dg.HookContext):
        if not counting:
            counting.append(_Counting(context.instance))
        events = materializations.of_step(counting[0], context.run_id, context.step_key)
        got[context.step_key] = sorted(e.event_specific_data.materialization.asset_key.to_user_string() for e in events)

    job = dg.Definitions(assets=[first, both, last], jobs=[dg.define_asset_job("all", hooks={record})])
    with dg.DagsterInstance.ephemeral() as instance:
        assert execute_as_job_run(job.resolve_job_def("all"), instance, {}, {}, steps_at_once=2).success
    assert got == {"first": ["first"], "both": ["left", "right"], "last": ["last"]}
    # Four materializations in the run, each handed out by the instance once (not again for every later step).
    assert counting[0].handed == 4
