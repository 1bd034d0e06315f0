"""Steps that cross the network retry with backoff; local steps fail at once."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs.resources import EXTERNAL_RETRY

BASE = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: id}
unify:
  tables:
    - {source: crm, table: contacts, columns: {email: email}}
  match:
    rules: []
"""


def _retry_policy(tmp_path, publish: str, asset: str) -> dg.RetryPolicy | None:
    (tmp_path / "c.yaml").write_text(BASE + publish)
    defs = build_definitions(load_config(tmp_path / "c.yaml"))
    return defs.resolve_assets_def(dg.AssetKey(["publish", asset])).op.retry_policy


def test_dataverse_sink_steps_retry_and_the_embedded_sink_does_not(tmp_path):
    dataverse = "publish:\n  sink:\n    kind: dataverse\n    dataverse:\n      url: https://contoso.crm.dynamics.com\n"
    assert _retry_policy(tmp_path, dataverse, "sink_customer_profile") == EXTERNAL_RETRY
    assert _retry_policy(tmp_path, "publish:\n  sink:\n    kind: sqlite\n", "sink_customer_profile") is None


def test_a_user_error_bypasses_the_retry_policy_and_a_transient_one_does_not(tmp_path):
    import time

    from ci_pipeline.defs.resources import LakeParquetIOManager, LakeResource, fail_fast
    from ci_pipeline.lake import StorageUnavailable

    lake = LakeResource(url=str(tmp_path / "lake"), base_dir=str(tmp_path))
    upstream = dg.AssetSpec(["crm", "contacts"])  # never materialised: its input cannot be read
    quick = dg.RetryPolicy(max_retries=2, delay=0.1)

    @dg.asset(
        key=["publish", "reads_missing"],
        deps=[],
        ins={"contacts": dg.AssetIn(["crm", "contacts"])},
        retry_policy=EXTERNAL_RETRY,
    )
    def reads_missing(contacts: pd.DataFrame) -> pd.DataFrame:
        return contacts

    @dg.asset(key=["publish", "busy_service"], retry_policy=quick)
    @fail_fast
    def busy_service() -> pd.DataFrame:
        raise StorageUnavailable("abfs://c/x: cannot read (HttpResponseError: 503)")

    resources = {"lake": lake, "io_manager": LakeParquetIOManager(lake=lake)}
    started = time.monotonic()
    missing = dg.materialize(
        [upstream, reads_missing],
        resources=resources,
        raise_on_error=False,
        selection=[dg.AssetKey(["publish", "reads_missing"])],
    )
    assert time.monotonic() - started < 5  # EXTERNAL_RETRY would wait 10 + 20 + 40 s
    assert not missing.success
    assert not [e for e in missing.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    busy = dg.materialize([busy_service], resources=resources, raise_on_error=False)
    assert len([e for e in busy.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 2
