"""Steps that cross the network retry with backoff; local steps fail at once."""

from __future__ import annotations

import dagster as dg

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
