"""Resources shared by every stage: the data lake, the IO manager that stores asset outputs in it, and the sink.

The configuration chooses each implementation in one place: :meth:`LakeResource.from_config` and
:func:`sink_resource`.
"""

import abc
import functools
from pathlib import Path

import dagster as dg
import pandas as pd

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.config.publish import DataverseConfig
from ci_pipeline.dataverse import Sink, open_dataverse_sink, open_sqlite_sink, sqlite_path
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake
from ci_pipeline.redact import redact

#: Retry policy for steps that call external services (Dataverse, ADLS, enrichment):
#: ``@dg.asset(retry_policy=EXTERNAL_RETRY)`` with :func:`fail_fast` on the body. Three more tries, 10 s, 20 s,
#: 40 s apart (with jitter), for transient failures only.
EXTERNAL_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def fail_fast(compute):
    """Decorate the body of an asset that has a retry policy: a mistake the user must fix fails the step at once.

    A :class:`UserError` (refused credentials, an unreachable account, a missing table) would fail the same way on
    every retry, so it becomes a :class:`dagster.Failure` that bypasses the retry policy; errors marked
    ``transient`` (a service that kept answering 5xx) still get the policy's retries.
    """

    @functools.wraps(compute)
    def body(*args, **kwargs):
        try:
            return compute(*args, **kwargs)
        except UserError as exc:
            if getattr(exc, "transient", False):
                raise
            raise dg.Failure(description=redact(exc), allow_retries=False) from exc

    return body


class LakeResource(dg.ConfigurableResource):
    """The data lake of the configured environment (a local folder, or ADLS Gen2 / Blob storage).

    Secret references (``env:``/``file:``) are resolved when the lake is first used, not when the definitions
    load, so `dagster dev` starts even where a production secret is absent.
    """

    url: str
    base_dir: str
    connection_string: str | None = None
    account_name: str | None = None
    account_key: str | None = None
    sas_token: str | None = None
    credential: str = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @classmethod
    def from_config(cls, config: ProjectConfig) -> "LakeResource":
        return cls(base_dir=str(config.base_dir), **config.lake.model_dump())

    def get_lake(self) -> Lake:
        settings = LakeConfig.model_validate(self.model_dump(exclude={"base_dir"}))
        return Lake.from_config(settings, Path(self.base_dir))


def asset_path(key: dg.AssetKey) -> str:
    """Where an asset's table lives in the lake: ``ci_pipeline/<key parts>.parquet``."""
    return "ci_pipeline/" + "/".join(key.path) + ".parquet"


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The frame's columns and their pandas dtypes, in order: what the UI's Columns panel shows."""
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


class LakeParquetIOManager(dg.ConfigurableIOManager):
    """Stores every DataFrame asset as one Parquet file in the lake, at a path derived from its asset key.

    Every table asset is stored here, so this is the one place that records its row count and column schema in
    Dagster's own metadata forms (``dagster/row_count``, ``dagster/column_schema``): the UI plots the first over
    time and shows the second as the asset's Columns.
    """

    lake: dg.ResourceDependency[LakeResource]

    @fail_fast
    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(obj)}")
        lake = self.lake.get_lake()
        relative = asset_path(context.asset_key)
        lake.write_parquet(relative, obj)
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(len(obj)),
                "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(obj)),
                "path": dg.MetadataValue.path(lake.url(relative)),
            }
        )

    @fail_fast
    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        return self.lake.get_lake().read_parquet(asset_path(context.asset_key))


class SinkResource(dg.ConfigurableResource):
    """Where the output tables are published (``publish.sink``): an embedded SQLite file or the Dataverse Web API.

    Publish assets ask for ``sink: SinkResource`` and call :meth:`open`; which implementation they get is chosen
    once, by :func:`sink_resource`.
    """

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """``sqlite`` or ``dataverse`` (the asset kind the UI shows)."""

    @abc.abstractmethod
    def open(self, lake: Lake, run_id: str) -> Sink:
        """A connected sink for one step; close it (``with``) when done. ``lake`` keeps dead-lettered rows."""


class SqliteSinkResource(SinkResource):
    """The embedded sink: one SQLite database file (the local implementation, real, no service needed)."""

    path: str

    @property
    def kind(self) -> str:
        return "sqlite"

    def open(self, lake: Lake, run_id: str) -> Sink:
        return open_sqlite_sink(Path(self.path))


class DataverseSinkResource(SinkResource):
    """A Dataverse environment through its Web API. Secret references in the settings are resolved at the first
    request, so `dagster dev` starts even where a production secret is absent."""

    #: The ``publish.sink.dataverse`` block as JSON (secret references stay references).
    settings_json: str
    base_dir: str

    @property
    def kind(self) -> str:
        return "dataverse"

    def open(self, lake: Lake, run_id: str) -> Sink:
        settings = DataverseConfig.model_validate_json(self.settings_json)
        return open_dataverse_sink(settings, Path(self.base_dir), lake, run_id)


def sink_resource(config: ProjectConfig) -> SinkResource | None:
    """The sink implementation ``publish.sink.kind`` names, or None for ``kind: none``."""
    sink = config.publish.sink
    if sink.kind == "sqlite":
        return SqliteSinkResource(path=str(sqlite_path(sink.path, config.base_dir)))
    if sink.kind == "dataverse":
        return DataverseSinkResource(settings_json=sink.dataverse.model_dump_json(), base_dir=str(config.base_dir))
    return None


def shared_resources(config: ProjectConfig) -> dict:
    """The resources every stage may ask for: ``lake``, ``io_manager`` and, unless ``sink.kind: none``, ``sink``."""
    lake = LakeResource.from_config(config)
    resources = {"lake": lake, "io_manager": LakeParquetIOManager(lake=lake)}
    sink = sink_resource(config)
    if sink is not None:
        resources["sink"] = sink
    return resources
