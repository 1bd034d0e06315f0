"""Resources shared by every stage: the data lake, the IO manager that stores asset outputs in it, and the sink.

The configuration chooses each implementation in one place: :meth:`LakeResource.from_config` and
:func:`sink_resource`.
"""

import abc
import functools
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import PrivateAttr

from ci_pipeline.config import ProjectConfig, load_config
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.config.publish import DataverseConfig
from ci_pipeline.dataverse import Sink, open_dataverse_sink, open_sqlite_sink, sqlite_path
from ci_pipeline.dataverse.attachment import AttachmentClaim
from ci_pipeline.errors import UserError
from ci_pipeline.governance.runtime import (
    RunAccess,
    RunNeeds,
    authorise_run,
    open_rules,
    unattended_lake_connection,
)
from ci_pipeline.lake import Lake, WrittenTable
from ci_pipeline.lake_owner import LakeOwnedError, claim_lake
from ci_pipeline.redact import redact
from ci_pipeline.side_by_side import each

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

    if inspect.isgeneratorfunction(compute):
        # An asset that may produce nothing (a skipped export) yields; its errors come while it is iterated.
        @functools.wraps(compute)
        def steps(*args, **kwargs):
            try:
                yield from compute(*args, **kwargs)
            except UserError as exc:
                if getattr(exc, "transient", False):
                    raise
                raise dg.Failure(description=redact(exc), allow_retries=False) from exc

        return steps

    @functools.wraps(compute)
    def body(*args, **kwargs):
        try:
            return compute(*args, **kwargs)
        except UserError as exc:
            if getattr(exc, "transient", False):
                raise
            raise dg.Failure(description=redact(exc), allow_retries=False) from exc

    return body


#: The governance checks of each run this process executes, by run id: done once per run and process, however
#: many resources ask (the lake, the IO manager's lake, the sink). A refusal is kept too, so it is audited once.
_RUN_ACCESS: dict[str, RunAccess | dg.Failure] = {}
#: The lake-ownership check of each run this process executes, by run id: the refusal, or "" (the lake is the
#: environment's). Not kept while the lake cannot be read: the next use asks again.
_LAKE_CLAIMS: dict[str, str] = {}
_RUN_ACCESS_LOCK = threading.Lock()


def _run_keys(context: dg.InitResourceContext) -> set[dg.AssetKey] | None:
    """The asset keys the run materialises (None when the run does not say)."""
    run = context.dagster_run
    if run is None:
        return None
    if run.asset_selection:
        return set(run.asset_selection)
    snapshot_id = run.execution_plan_snapshot_id
    plan = context.instance.get_execution_plan_snapshot(snapshot_id) if snapshot_id and context.instance else None
    if plan is None:
        return None
    return {
        output.properties.asset_key
        for step in plan.steps
        for output in step.outputs
        if output.properties is not None and output.properties.asset_key is not None
    }


def run_needs(config: ProjectConfig, keys: set[dg.AssetKey] | None) -> RunNeeds:
    """What a run touches, from its asset keys (everything when unknown): the sources it ingests, the sink, the
    exports."""
    exports = {e.name for e in config.publish.exports}
    if keys is None:
        return RunNeeds(sources=frozenset(config.sources), sink=True, exports=frozenset(exports))
    published = {key.path[1] for key in keys if len(key.path) == 2 and key.path[0] == "publish"}
    return RunNeeds(
        sources=frozenset(key.path[0] for key in keys if key.path[0] in config.sources),
        sink=any(name.startswith("sink_") for name in published),
        exports=frozenset(name for name in exports if f"export_{name}" in published),
    )


def refusal(message: str) -> dg.Failure:
    """A run refused before it moves data, as the failure its resources raise: no retry repeats it, and its cause
    is a :class:`UserError` with the same text, so that the console and the run's summary recognise a user error
    and show the message alone, without Dagster's stack traces."""
    failure = dg.Failure(description=message, allow_retries=False)
    failure.__cause__ = UserError(message)
    return failure


#: The tag that stops Dagster's automatic run retries (``run_retries`` in dagster.yaml) for one run.
MAX_RETRIES_TAG = "dagster/max_retries"


def refuse_run(context: dg.InitResourceContext, failure: dg.Failure) -> NoReturn:
    """Fail the run a refusal stopped before it moved data, and mark it not to be retried: the instance's run
    retries would fail the same way, and send a second failure notice."""
    run, instance = context.dagster_run, context.instance
    if run is not None and instance is not None and run.tags.get(MAX_RETRIES_TAG) != "0":
        instance.add_run_tags(run.run_id, {MAX_RETRIES_TAG: "0"})
    raise failure from failure.__cause__


def claim_run_lake(run_id: str, lake: Lake, environment: str) -> None:
    """Check, once per run and process, that the run's lake folder belongs to its environment (the lake's marker,
    :mod:`ci_pipeline.lake_owner`), claiming it on the environment's first run.

    Raises:
        LakeOwnedError: another environment owns the lake (again at every ask of the run).
    """
    with _RUN_ACCESS_LOCK:
        found = _LAKE_CLAIMS.get(run_id)
        if found is None:
            try:
                claim_lake(lake, environment)
                found = ""
            except LakeOwnedError as exc:
                found = str(exc)
            for old in list(_LAKE_CLAIMS)[:-8]:
                del _LAKE_CLAIMS[old]
            _LAKE_CLAIMS[run_id] = found
    if found:
        raise LakeOwnedError(found)


def run_access(context: dg.InitResourceContext, config_path: str | None) -> RunAccess:
    """The governance checks of the run ``context`` belongs to (:func:`authorise_run`), as the user who launched
    it; a refusal becomes a failure that no retry repeats. Without a configuration file nothing is governed."""
    run = context.dagster_run
    if config_path is None or run is None:
        return RunAccess(actor=None, governed=False)
    with _RUN_ACCESS_LOCK:
        found = _RUN_ACCESS.get(run.run_id)
        if found is None:
            try:
                config = load_config(config_path, references=False)
                found = authorise_run(
                    config, run.tags, run_needs(config, _run_keys(context)), f"job {run.job_name}, run {run.run_id}"
                )
            except UserError as exc:
                found = refusal(f"governance: {redact(exc)}")
            # Only the runs of this process are kept, and only the newest few.
            for old in list(_RUN_ACCESS)[:-8]:
                del _RUN_ACCESS[old]
            _RUN_ACCESS[run.run_id] = found
    if isinstance(found, dg.Failure):
        refuse_run(context, found)
    return found


def storage_account(settings: LakeConfig, base_dir: Path, connection: dict | None) -> str:
    """The lake's storage account (``file://<folder>`` for a local lake): what the sink's marker records."""
    if connection is not None:
        return connection["account"]
    url = settings.url
    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        return "file://" + (path if path.is_absolute() else base_dir / path).resolve().as_posix()
    host = urlparse(url).netloc.partition("@")[2]
    return host.split(".")[0] if host else settings.account_name or url


class LakeResource(dg.ConfigurableResource):
    """The data lake of the configured environment (a local folder, or ADLS Gen2 / Blob storage).

    Secret references (``env:``/``file:``) are resolved when the lake is first used, not when the definitions
    load, so `dagster dev` starts even where a production secret is absent. In a run, the governance checks run
    first (:func:`run_access`) and ``lake.connection`` is resolved as the user who launched it; the resolved
    values stay in this process's memory, never in the resource's configuration.
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
    connection: str | None = None
    region: str | None = None
    #: The configuration file, for the governance checks of each run (None: not governed).
    config_path: str | None = None
    #: The environment (the configuration's ``name``) the lake folder must belong to (None: not checked).
    environment: str | None = None
    _access: RunAccess | None = PrivateAttr(default=None)
    _run_id: str | None = PrivateAttr(default=None)

    @classmethod
    def from_config(cls, config: ProjectConfig) -> "LakeResource":
        path = str(config.path) if config.path is not None else None
        return cls(base_dir=str(config.base_dir), config_path=path, environment=config.name, **config.lake.model_dump())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._access = run_access(context, self.config_path)
        run = context.dagster_run
        self._run_id = run.run_id if run is not None else None
        try:
            self.get_lake()  # another environment's lake refuses the run here, before any step starts
        except LakeOwnedError as exc:
            refuse_run(context, refusal(redact(exc)))
        except UserError:
            pass  # a lake that cannot be opened now: the step that uses it says why (and checks the owner then)

    @property
    def access(self) -> RunAccess:
        """The run's governance outcome (an ungoverned one outside a run)."""
        return self._access or RunAccess(actor=None, governed=False)

    def settings(self) -> LakeConfig:
        """The ``lake`` section this resource was made from."""
        return LakeConfig.model_validate(self.model_dump(exclude={"base_dir", "config_path", "environment"}))

    def get_lake(self) -> Lake:
        """The lake; in a run, only once it is known to belong to the run's environment (:func:`claim_run_lake`)."""
        lake = Lake.from_config(self.settings(), Path(self.base_dir), self.access.connection("lake.connection"))
        if self._run_id is not None and self.environment is not None:
            claim_run_lake(self._run_id, lake, self.environment)
        return lake

    def get_unattended_lake(self, config: ProjectConfig, audit_refusal: bool = True) -> Lake:
        """The lake as a schedule or sensor reads it outside a run: ``lake.connection`` resolved as
        ``governance.service_principal``, whom the runs they start act as (not as the daemon's OS user)."""
        if not config.lake.connection:
            return self.get_lake()
        connection = unattended_lake_connection(config, audit_refusal=audit_refusal)
        return Lake.from_config(self.settings(), Path(self.base_dir), connection)

    def attachment_claim(self, dataverse_region: str | None) -> AttachmentClaim | None:
        """What a governed run claims in the sink's marker row (None for an ungoverned run)."""
        access = self.access
        if not access.governed or access.environment_id is None:
            return None
        account = storage_account(self.settings(), Path(self.base_dir), access.connection("lake.connection"))
        return AttachmentClaim(access.environment_id, account, self.region, dataverse_region)


def export_lake(lake: LakeResource, export) -> Lake:
    """Where an export writes: the lake, or the storage of the governed ``adls`` connection it is bound to."""
    if export.connection is None:
        return lake.get_lake()
    index = [e.name for e in load_config(lake.config_path, references=False).publish.exports].index(export.name)
    connection = lake.access.connection(f"publish.exports[{index}].connection") if lake.config_path else None
    if connection is None:
        raise UserError(
            f"export {export.name!r}: connection {export.connection!r} is governed and this run could not resolve it; "
            "run `ci-pipeline init` and bind the export with `ci-pipeline exports add`"
        )
    return Lake.for_connection(connection)


def asset_path(key: dg.AssetKey) -> str:
    """Where an asset's table lives in the lake: ``ci_pipeline/<key parts>.parquet``."""
    return "ci_pipeline/" + "/".join(key.path) + ".parquet"


def write_tables(lake: Lake, frames: dict[dg.AssetKey, pd.DataFrame]) -> dict[dg.AssetKey, WrittenTable]:
    """Store the tables of a step with several large outputs two at a time (Parquet's encoders run outside Python's
    lock, where the IO manager stores one output after another); each is then handed to the IO manager as the
    :class:`WrittenTable` it records and loads like any other."""

    def one(item: tuple[dg.AssetKey, pd.DataFrame]) -> WrittenTable:
        asset, frame = item
        relative = asset_path(asset)
        lake.write_parquet(relative, frame)
        return WrittenTable(relative, len(frame), pa.Schema.from_pandas(frame, preserve_index=False))

    return dict(zip(frames, each(one, frames.items(), 2, "write-tables"), strict=True))


def stored_outputs(
    context: dg.AssetExecutionContext, lake: Lake, frames: dict[str, pd.DataFrame], metadata: dict[str, dict]
) -> Iterator[dg.Output]:
    """The outputs of a step with several large tables (output name -> frame) stored two at a time
    (:func:`write_tables`), as the step's Outputs with their ``metadata`` (by output name)."""
    keys = {name: context.asset_key_for_output(name) for name in frames}
    written = write_tables(lake, {keys[name]: frame for name, frame in frames.items()})
    for name in frames:
        yield dg.Output(written[keys[name]], output_name=name, metadata=metadata.get(name, {}))


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The frame's columns and their pandas dtypes, in order: what the UI's Columns panel shows."""
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


class LakeParquetIOManager(dg.ConfigurableIOManager):
    """Stores every DataFrame asset as one Parquet file in the lake, at a path derived from its asset key.

    Every table asset is stored here, so this is the one place that records its row count and column schema in
    Dagster's own metadata forms (``dagster/row_count``, ``dagster/column_schema``): the UI plots the first over
    time and shows the second as the asset's Columns. A step that writes a large table itself, in batches, returns
    a :class:`WrittenTable` for it instead of a frame: it is recorded the same way, and loaded as a frame the same
    way by the readers that want one.
    """

    lake: dg.ResourceDependency[LakeResource]

    @fail_fast
    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | WrittenTable | None) -> None:
        if obj is None:
            return
        lake = self.lake.get_lake()
        relative = asset_path(context.asset_key)
        if isinstance(obj, WrittenTable):
            if obj.path != relative:
                raise TypeError(
                    f"{context.asset_key.to_user_string()}: the step stored its table at {obj.path}, not at the "
                    f"asset's path {relative}"
                )
            rows, schema = obj.rows, column_schema(obj.schema.empty_table().to_pandas())
        elif isinstance(obj, pd.DataFrame):
            lake.write_parquet(relative, obj)
            rows, schema = len(obj), column_schema(obj)
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(obj)}")
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(rows),
                "dagster/column_schema": dg.MetadataValue.table_schema(schema),
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

    #: The Dataverse environment's region (``publish.sink.region``), checked against the lake's.
    region: str | None = None

    @abc.abstractmethod
    def connect(self, lake: Lake, run_id: str, connection: dict | None) -> Sink:
        """The sink, connected (``connection``: the governed one resolved), before the attachment rules."""

    @abc.abstractmethod
    def target(self, connection: dict | None) -> str:
        """The Dataverse environment (its URL, or the embedded file) a capacity report is about."""

    def _connection(self, lake: LakeResource | Lake) -> dict | None:
        """The governed ``publish.sink.connection`` as the run resolved it (None when the sink names none)."""
        return None

    def open(self, lake: LakeResource | Lake, run_id: str) -> Sink:
        """A connected sink for one step; close it (``with``) when done. ``lake`` keeps dead-lettered rows.

        Given the run's lake resource, a governed run applies the attachment rules first (the marker row), so a
        refused attachment publishes nothing; given a plain :class:`Lake` (tools, tests) nothing is governed.
        """
        store = lake.get_lake() if isinstance(lake, LakeResource) else lake
        sink = self.connect(store, run_id, self._connection(lake))
        claim = lake.attachment_claim(self.region) if isinstance(lake, LakeResource) else None
        if claim is not None:
            try:
                sink.claim(claim)
            except BaseException:
                sink.close()
                raise
        return sink

    def record_capacity(self, lake: LakeResource, report: dict) -> None:
        """Keep a capacity report in the governance store, per Dataverse environment (governed runs only)."""
        access = lake.access
        if not access.governed or lake.config_path is None:
            return
        connection = self._connection(lake)
        rules = open_rules(load_config(lake.config_path, references=False), access.actor)
        try:
            rules.record_capacity(self.target(connection), report, connection["name"] if connection else None)
        finally:
            rules.store.close()


class SqliteSinkResource(SinkResource):
    """The embedded sink: one SQLite database file (the local implementation, real, no service needed)."""

    path: str

    @property
    def kind(self) -> str:
        return "sqlite"

    def connect(self, lake: Lake, run_id: str, connection: dict | None) -> Sink:
        return open_sqlite_sink(Path(self.path))

    def target(self, connection: dict | None) -> str:
        return f"sqlite:{self.path}"


class DataverseSinkResource(SinkResource):
    """A Dataverse environment through its Web API. Secret references in the settings are resolved at the first
    request, so `dagster dev` starts even where a production secret is absent."""

    #: The ``publish.sink.dataverse`` block as JSON (secret references stay references).
    settings_json: str
    base_dir: str
    #: ``publish.sink.connection``: resolved by the run's governance checks, as the user who launched it.
    connection: str | None = None

    @property
    def kind(self) -> str:
        return "dataverse"

    def _connection(self, lake: LakeResource | Lake) -> dict | None:
        if self.connection is None:
            return None
        resolved = lake.access.connection("publish.sink.connection") if isinstance(lake, LakeResource) else None
        if resolved is None:
            raise UserError(
                f"publish.sink.connection {self.connection!r}: only a run of an initialised environment resolves a "
                "governed connection; run `ci-pipeline init`, add the connection, and publish with `ci-pipeline run`"
            )
        return resolved

    def connect(self, lake: Lake, run_id: str, connection: dict | None) -> Sink:
        settings = DataverseConfig.model_validate_json(self.settings_json)
        return open_dataverse_sink(settings, Path(self.base_dir), lake, run_id, connection)

    def target(self, connection: dict | None) -> str:
        url = connection["org_url"] if connection else DataverseConfig.model_validate_json(self.settings_json).url
        return url.rstrip("/")


def sink_resource(config: ProjectConfig) -> SinkResource | None:
    """The sink implementation ``publish.sink.kind`` names, or None for ``kind: none``."""
    sink = config.publish.sink
    if sink.kind == "sqlite":
        return SqliteSinkResource(path=str(sqlite_path(sink.path, config.base_dir)), region=sink.region)
    if sink.kind == "dataverse":
        return DataverseSinkResource(
            settings_json=(sink.dataverse or DataverseConfig()).model_dump_json(),
            base_dir=str(config.base_dir),
            connection=sink.connection,
            region=sink.region,
        )
    return None


def shared_resources(config: ProjectConfig) -> dict:
    """The resources every stage may ask for: ``lake``, ``io_manager`` and, unless ``sink.kind: none``, ``sink``."""
    lake = LakeResource.from_config(config)
    resources = {"lake": lake, "io_manager": LakeParquetIOManager(lake=lake)}
    sink = sink_resource(config)
    if sink is not None:
        resources["sink"] = sink
    return resources
