"""The governance checks of a run: who launched it, may they, and the connections it needs, resolved as them.

Called once when a run starts (by the Dagster resources in ``ci_pipeline/defs/resources.py``), before any step
reads or writes data, so a run that needs a removed, detached or unshared connection, or one launched by someone
without rights, fails at once with the reason and the fix. No Dagster import here.

An environment nobody has initialised (``ci-pipeline init``) is not governed: its runs go on as before, unless
``governance.required`` is on or the configuration names a governed connection, which then cannot be resolved.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import make_url

from ci_pipeline.config.base import did_you_mean
from ci_pipeline.errors import UserError
from ci_pipeline.governance.identity import LAUNCHED_BY_TAG, acting_user, check_name
from ci_pipeline.governance.secrets import SecretResolver, secret_roots
from ci_pipeline.governance.service import Governance, source_owners
from ci_pipeline.governance.store import METADATA_URL_ENV, MetadataStore, metadata_url, open_store

#: Tags Dagster puts on runs that a schedule or sensor started: nobody launched them, the service principal acts.
UNATTENDED_TAGS = ("dagster/schedule_name", "dagster/sensor_name")


@dataclass(frozen=True)
class RunNeeds:
    """What one run touches: the sources it ingests, whether it publishes to the sink, the exports it writes."""

    sources: frozenset[str] = frozenset()
    sink: bool = False
    exports: frozenset[str] = frozenset()


@dataclass
class RunAccess:
    """The outcome of the checks: who acts, and the connections the run may use, resolved (never print these)."""

    actor: str | None
    governed: bool
    environment_id: str | None = None
    #: Configuration key (``lake.connection``, ``publish.sink.connection``, ``publish.exports[i].connection``) ->
    #: the connection's settings with its secrets resolved.
    connections: dict[str, dict] = field(default_factory=dict, repr=False)
    #: Export name -> why it is skipped (detached or deactivated): skipped, not failed.
    inactive_exports: dict[str, str] = field(default_factory=dict)

    def connection(self, key: str) -> dict | None:
        """The resolved connection configuration key ``key`` names (None when it names none)."""
        return self.connections.get(key)


def run_actor(tags: Mapping[str, str], service_principal: str | None) -> tuple[str | None, str]:
    """Who a run acts as, and why: its ``launched_by`` tag; for a schedule or sensor the configured service
    principal (None when there is none); else the user of this process (``$CI_PIPELINE_USER``, the OS user)."""
    launched_by = tags.get(LAUNCHED_BY_TAG)
    if launched_by:
        return check_name(launched_by, f"run tag {LAUNCHED_BY_TAG}"), "launched by"
    unattended = unattended_by(tags)
    if unattended:
        return service_principal, f"started by {unattended!r}, acting as governance.service_principal"
    return acting_user(), "started by this process's user"


def unattended_by(tags: Mapping[str, str]) -> str | None:
    """The schedule or sensor that started a run (None when someone launched it)."""
    return next((tags[t] for t in UNATTENDED_TAGS if tags.get(t) and not tags.get(LAUNCHED_BY_TAG)), None)


def _local_store_missing(url: str) -> bool:
    """True for a SQLite store whose file does not exist: nobody ran ``init`` (checked without creating it)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).exists())


def governed_connections(config, needs: RunNeeds) -> dict[str, tuple[str, str]]:
    """Configuration key -> (connection name, expected type) of every governed connection the run needs."""
    found: dict[str, tuple[str, str]] = {}
    if config.lake.connection:
        found["lake.connection"] = (config.lake.connection, "adls")
    if needs.sink and config.publish.sink.connection:
        found["publish.sink.connection"] = (config.publish.sink.connection, "dataverse")
    for index, export in enumerate(config.publish.exports):
        if export.connection and export.name in needs.exports:
            found[f"publish.exports[{index}].connection"] = (export.connection, "adls")
    return found


def configured_connections(config) -> dict[str, tuple[str, str]]:
    """Configuration key -> (connection name, expected type) of every connection the configuration names."""
    every = RunNeeds(sink=True, exports=frozenset(e.name for e in config.publish.exports))
    found = governed_connections(config, every)
    webhook = config.orchestration.notifications.webhook_connection
    if webhook:
        found["orchestration.notifications.webhook_connection"] = (webhook, "webhook")
    for name, spec in config.enrich.enrichments.items():
        if spec.connection and spec.provider == "http" and spec.active:
            found[f"enrich.enrichments.{name}.connection"] = (spec.connection, "http-enrichment")
    return found


def connection_problems(config) -> list[str]:
    """Each connection the configuration names that does not exist or is of another type, as the acting user
    (``$CI_PIPELINE_USER``, else the OS user) sees the environment's store: what a run would fail on, told by
    ``validate``. Nothing to say without a store to read (nobody ran ``init``, a lake in Azure without
    ``$CI_PIPELINE_METADATA_URL``) or for a user who may use no connection."""
    wanted = configured_connections(config)
    if not wanted:
        return []
    try:
        url = metadata_url(config)
    except UserError:
        return []
    if _local_store_missing(url):
        return []
    actor = acting_user()
    rules = Governance(open_store(url), actor, SecretResolver([]))
    try:
        found = rules.usable_connections()
    finally:
        rules.store.close()
    if found is None:
        return []
    role, usable, inactive = found
    problems = []
    for key, (name, type_name) in wanted.items():
        if key.removeprefix("enrich.enrichments.").removesuffix(".connection") in inactive:
            continue  # deactivated when its connection was removed: the run skips it
        if name not in usable:
            near = did_you_mean(name, usable)
            if role == "admin":
                fix = f"an admin adds it with `ci-pipeline connections add {shlex.quote(name)} --type {type_name} ...`"
                problems.append(f"{key}: connection {name!r} does not exist{near}; {fix}, or change {key}")
            else:
                problems.append(
                    f"{key}: no connection named {name!r} is shared with {actor!r}{near}; `ci-pipeline connections "
                    f"list` shows the ones you may use, an admin shares one with `ci-pipeline connections share "
                    f"{shlex.quote(name)} {shlex.quote(actor)}`"
                )
        elif usable[name] != type_name:
            problems.append(f"{key}: connection {name!r} is a {usable[name]} connection; this needs a {type_name} one")
    return problems


def resolve_outside_run(name: str, key: str, type_name: str, base_dir: Path) -> dict:
    """Resolve connection ``name`` (configuration key ``key``) for a command run outside Dagster, as the acting
    user (``$CI_PIPELINE_USER``, else the OS user), from the store ``$CI_PIPELINE_METADATA_URL`` names.

    For the lake of a configuration, which lies in Azure when it names a connection: such a lake has no local
    store, so the URL is required.
    """
    url = os.environ.get(METADATA_URL_ENV, "").strip()
    if not url:
        raise UserError(
            f"{key} {name!r} is a governed connection and the lake is in Azure: set {METADATA_URL_ENV} to the "
            "environment's metadata store to use it"
        )
    rules = Governance(open_store(url), acting_user(), SecretResolver(secret_roots(base_dir)))
    try:
        return rules.use_connection(name, key, type_name)
    finally:
        rules.store.close()


def unattended_lake_connection(config, *, audit_refusal: bool = True) -> dict | None:
    """``lake.connection`` resolved as ``governance.service_principal``, for a schedule or sensor that reads the
    lake outside a run (the new-file sensor lists the sources with it): the principal the runs they start act as,
    so what the principal may not use is not listed either. None when the configuration names no connection.

    Raises :class:`UserError` (``AccessDenied`` for a refusal, audited unless ``audit_refusal`` is False) naming
    the connection, the principal and the fix.
    """
    name = config.lake.connection
    if not name:
        return None
    _is_governed(config, {"lake.connection": (name, "adls")})
    actor = config.governance.service_principal
    if actor is None:
        raise UserError(
            f"lake.connection {name!r}: schedules and sensors act as governance.service_principal, which is not "
            "set; set it to a contributor and share the connection with it (`ci-pipeline connections share "
            f"{shlex.quote(name)} <principal>`)"
        )
    rules = open_rules(config, actor)
    try:
        return rules.use_connection(name, "lake.connection", "adls", audit_refusal=audit_refusal)
    finally:
        rules.store.close()


def open_rules(config, actor: str) -> Governance:
    """The governance rules of ``config``'s environment, acting as ``actor``."""
    return Governance(open_store(metadata_url(config)), actor, SecretResolver(secret_roots(Path(config.base_dir))))


def authorise_run(config, tags: Mapping[str, str], needs: RunNeeds, what: str) -> RunAccess:
    """Check a run before it moves any data; raise :class:`UserError` (or ``AccessDenied``) naming the fix.

    Args:
        config: the project configuration.
        tags: the run's tags (``launched_by``, schedule and sensor names).
        needs: what the run touches.
        what: the run, for messages and the audit log (``job full_refresh, run 1a2b...``).
    """
    wanted = governed_connections(config, needs)
    if not _is_governed(config, wanted):
        # Who runs it does not matter (and a container's user may have no name).
        return RunAccess(actor=None, governed=False)
    actor, how = run_actor(tags, config.governance.service_principal)
    if actor is None:
        raise UserError(
            f"{what} was {how}, but governance.service_principal is not set; set it to a principal with the "
            "contributor or admin role (`ci-pipeline roles grant <name> contributor`)"
        )
    rules = open_rules(config, actor)
    try:
        rules.require_run(what)
        # Schedules and sensors are the system refresh: they refresh every source; people refresh their own.
        if not unattended_by(tags):
            _check_sources(rules, config, needs.sources)
        access = RunAccess(actor=actor, governed=True, environment_id=rules.environment_id())
        _check_exports(rules, config, needs.exports, access)
        # A skipped export needs no connection: the one it was detached from may be gone.
        active = replace(needs, exports=frozenset(needs.exports - set(access.inactive_exports)))
        for key, (name, type_name) in governed_connections(config, active).items():
            access.connections[key] = rules.use_connection(name, key, type_name)
        _check_attachment(rules, access)
    finally:
        rules.store.close()
    return access


def is_initialised(config) -> bool:
    """True once someone ran ``init`` for ``config``'s environment (a missing local store is not created to tell);
    False too for a lake in Azure without ``CI_PIPELINE_METADATA_URL``, which has no store."""
    try:
        url = metadata_url(config)
    except UserError:
        return False
    if _local_store_missing(url):
        return False
    store = MetadataStore(url)
    try:
        store.upgrade()
        return Governance(store, "", SecretResolver([])).initialised()
    finally:
        store.close()


def _is_governed(config, wanted: Mapping) -> bool:
    if wanted or config.governance.required:
        # Raises for a lake in Azure without CI_PIPELINE_METADATA_URL (no store), since it must be governed.
        metadata_url(config)
    if is_initialised(config):
        return True
    if config.governance.required or wanted:
        needed = ", ".join(f"{key} {name!r}" for key, (name, _) in wanted.items())
        reason = f"it names the governed connection(s) {needed}" if wanted else "governance.required is on"
        raise UserError(
            f"this environment is not initialised, and {reason}; run `ci-pipeline init` (its caller becomes admin), "
            "add the connections, then run again"
        )
    return False


def _check_sources(rules: Governance, config, sources: Collection[str]) -> None:
    """Only a source's owner or an admin refreshes it (runs its ingest)."""
    if not sources:
        return
    rules.sources(source_owners(config))
    for source in sorted(sources):
        rules.require_source_manager(source, "sources.refresh")


def _check_exports(rules: Governance, config, exports: Collection[str], access: RunAccess) -> None:
    """Exports bound to a connection run only while their binding is active; a detached one is skipped."""
    for export in config.publish.exports:
        if not export.connection or export.name not in exports:
            continue
        binding = rules.binding("export", export.name)
        quoted = shlex.quote(export.name)
        if binding is None:
            raise UserError(
                f"export {export.name!r} names connection {export.connection!r} but is not bound to it; bind it "
                f"with `ci-pipeline exports add {quoted} --connection {shlex.quote(export.connection)}`"
            )
        if not binding["active"]:
            access.inactive_exports[export.name] = (
                f"export {export.name!r} is detached (from {binding['detached_from'] or 'its connection'}); attach "
                f"it again with `ci-pipeline exports attach {quoted} <connection>`"
            )
        elif binding["connection"] != export.connection:
            raise UserError(
                f"export {export.name!r} is bound to connection {binding['connection']!r}, but the configuration "
                f"names {export.connection!r}; make them agree (`ci-pipeline exports attach {quoted} ...`)"
            )


def _check_attachment(rules: Governance, access: RunAccess) -> None:
    """The sink's connection must be the Dataverse environment this environment is attached to, if any."""
    sink = access.connection("publish.sink.connection")
    if sink is None:
        return
    attached = rules.dataverse_attachment()
    if attached is not None and attached["connection"] != sink["name"]:
        raise UserError(
            f"publish.sink.connection {sink['name']!r}: this environment is already attached to another environment "
            f"(Dataverse {attached['org_url']}, connection {attached['connection']!r}); detach it with "
            "`ci-pipeline connections detach-dataverse` or point publish.sink.connection at it"
        )
