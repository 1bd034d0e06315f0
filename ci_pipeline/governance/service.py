"""The governance rules: who may do what with connections, sources and roles; every change audited.

:class:`Governance` is the one entry point. It acts as one user (the acting user), checks that user's role for each
operation, makes the change and appends its audit row in the same transaction. A refused attempt changes nothing
and is audited as ``refused`` in a transaction of its own, then raises :class:`AccessDenied`.

Rights:

- admin: everything; the only role that adds, edits, shares or removes connections and grants roles;
- contributor: uses the connections shared with it (sees their name and type only), binds exports and
  enrichments to them, manages the sources it owns;
- viewer: lists; changes nothing;
- a name with no role (an unknown user, a source owner never granted one): no rights at all.
"""

from __future__ import annotations

import difflib
import shlex
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ci_pipeline.errors import UserError
from ci_pipeline.governance import audit
from ci_pipeline.governance.connections import (
    CONNECTION_TYPES,
    CONSENT_VERSION,
    check_settings,
    consent_sha256,
    consent_text,
)
from ci_pipeline.governance.identity import check_name
from ci_pipeline.governance.models import (
    BINDING_KINDS,
    ROLES,
    AuditEntry,
    Binding,
    CapacityReport,
    Connection,
    ConnectionGrant,
    Consent,
    DataSource,
    DataverseAttachment,
    Environment,
    Principal,
    RoleAssignment,
    utcnow,
)
from ci_pipeline.governance.secrets import SecretResolver
from ci_pipeline.governance.store import MetadataStore


class AccessDenied(UserError):
    """The acting user's role does not allow the operation. The attempt is in the audit log."""


class ConsentRequired(UserError):
    """A connection that sends data outside the platform was created or redirected without ``--consent``."""


def _not_your_source(source: str, owner: str, action: str) -> str:
    """The refusal of ``action`` on a source managed by someone else, ending with what the user can do instead."""
    quoted = shlex.quote(source)
    verb = {"sources.refresh": "refresh it", "sources.delete": "remove it", "sources.set-owner": "hand it over"}
    said = f"source {source!r} is managed by {owner!r}; only they or an admin may {verb.get(action, 'change it')}"
    if action == "sources.refresh":
        return (
            f"{said}: ask them or an admin to run it, or to hand it to you (`ci-pipeline sources set-owner {quoted} "
            "YOU`), or run without its ingest (`ci-pipeline run --job ingest_<your source>`; "
            "`ci-pipeline sources list` shows yours)"
        )
    return f"{said}: ask them or an admin (`ci-pipeline sources list` shows who manages each source)"


class _Refused(Exception):
    def __init__(self, action: str, target: str, reason: str):
        super().__init__(reason)
        self.action, self.target, self.reason = action, target, reason


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did: whether it made the acting user admin, and the sources it registered."""

    created: bool
    admins: list[str]
    new_sources: list[str]
    #: The acting user's role after ``init`` (None: no rights, so nothing was registered).
    role: str | None
    #: The service principal that was given the contributor role (None: nothing to do).
    service_principal: str | None = None


class Governance:
    """The governance rules, applied as ``actor`` to the metadata ``store``.

    Args:
        store: the open metadata store.
        actor: the acting user's name (see :func:`ci_pipeline.governance.acting_user`).
        resolver: resolves secret references (``file:`` roots, Key Vault credential); checks them when stored.
    """

    def __init__(self, store: MetadataStore, actor: str, resolver: SecretResolver):
        self.store = store
        self.actor = actor
        self.resolver = resolver

    # -- plumbing ---------------------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, audit_refusal: bool = True) -> Iterator[Session]:
        try:
            with self.store.session() as session:
                yield session
        except _Refused as refused:
            if not audit_refusal:
                raise AccessDenied(refused.reason) from None
            # The change was rolled back with its transaction; the attempt is recorded in a new one.
            with self.store.session() as session:
                audit.append(
                    session,
                    self.actor,
                    refused.action,
                    refused.target,
                    outcome="refused",
                    after={"reason": refused.reason},
                )
            raise AccessDenied(refused.reason) from None

    def _principal(self, session: Session, name: str, *, create: bool = False) -> Principal | None:
        found = session.scalar(select(Principal).where(Principal.name == name))
        if found is None and create:
            found = Principal(name=name, created_at=utcnow())
            session.add(found)
            session.flush()
        return found

    def _role_of(self, session: Session, name: str) -> str | None:
        return session.scalar(
            select(RoleAssignment.role)
            .join(Principal, Principal.id == RoleAssignment.principal_id)
            .where(Principal.name == name)
        )

    def _require(self, session: Session, action: str, target: str, roles: Sequence[str]) -> str:
        role = self._role_of(session, self.actor)
        if role is None and not self._admins(session):
            raise UserError(
                "this environment is not initialised yet; run `ci-pipeline init` (its caller becomes admin)"
            )
        if role is None:
            raise _Refused(
                action,
                target,
                f"{self.actor!r} has no role in this environment, so no rights; an admin grants one with "
                f"`ci-pipeline roles grant {shlex.quote(self.actor)} contributor`",
            )
        if role not in roles:
            raise _Refused(action, target, f"{action} needs the {' or '.join(roles)} role; {self.actor!r} is {role}")
        return role

    def _connection(self, session: Session, name: str) -> Connection:
        found = session.scalar(select(Connection).where(Connection.name == name))
        if found is None:
            names = session.scalars(select(Connection.name)).all()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"no connection named {name!r}; {hint}`ci-pipeline connections list` shows them")
        return found

    def _shared_with(self, session: Session, connection: Connection) -> list[str]:
        return list(
            session.scalars(
                select(Principal.name)
                .join(ConnectionGrant, ConnectionGrant.principal_id == Principal.id)
                .where(ConnectionGrant.connection_id == connection.id)
                .order_by(Principal.name)
            )
        )

    def _bindings(self, session: Session, connection: Connection) -> list[dict]:
        rows = session.execute(
            select(Binding, Principal.name)
            .join(Principal, Principal.id == Binding.owner_id)
            .where(Binding.connection_id == connection.id)
            .order_by(Binding.kind, Binding.name)
        )
        return [{"kind": b.kind, "name": b.name, "owner": owner, "active": b.active} for b, owner in rows]

    def _is_shared_with(self, session: Session, connection: Connection, name: str) -> bool:
        return name in self._shared_with(session, connection)

    @staticmethod
    def _record(connection: Connection) -> dict:
        # What the audit log keeps of a connection: settings and references, which hold no secret value. The
        # references are a list of {setting, reference} so that the redaction of `"client_secret": "..."` shapes
        # in printed JSON leaves them readable.
        return {
            "name": connection.name,
            "type": connection.type,
            "fields": dict(connection.fields),
            "secrets": [{"setting": k, "reference": v} for k, v in sorted(connection.secret_refs.items())],
        }

    # -- environment and roles --------------------------------------------------------------------------------
    def init(self, source_owners: Mapping[str, str], service_principal: str | None = None) -> InitResult:
        """Make the acting user admin of a new environment and register the configured sources.

        On an initialised environment roles are left alone; only sources the configuration gained are registered.
        Run by an admin, it also gives ``service_principal`` (the identity of schedules and sensors) the
        contributor role when it has no role yet.
        """
        with self._tx() as session:
            admins = self._admins(session)
            created = not admins
            if created:
                principal = self._principal(session, self.actor, create=True)
                session.add(
                    RoleAssignment(principal_id=principal.id, role="admin", granted_by=self.actor, granted_at=utcnow())
                )
                audit.append(session, self.actor, "environment.init", "environment", after={"admin": self.actor})
                admins = [self.actor]
            role = self._role_of(session, self.actor)
            # Someone without a role changes nothing, not even the list of sources.
            new_sources = self._register_sources(session, source_owners) if role else []
            granted = None
            if role == "admin" and service_principal and self._role_of(session, service_principal) is None:
                granted = check_name(service_principal, "governance.service_principal")
                principal = self._principal(session, granted, create=True)
                session.add(
                    RoleAssignment(
                        principal_id=principal.id, role="contributor", granted_by=self.actor, granted_at=utcnow()
                    )
                )
                after = {"user": granted, "role": "contributor", "as": "governance.service_principal"}
                audit.append(session, self.actor, "roles.grant", granted, after=after)
        return InitResult(created, admins, new_sources, role, granted)

    def _admins(self, session: Session) -> list[str]:
        return list(
            session.scalars(
                select(Principal.name)
                .join(RoleAssignment, RoleAssignment.principal_id == Principal.id)
                .where(RoleAssignment.role == "admin")
                .order_by(Principal.name)
            )
        )

    def grant_role(self, user: str, role: str) -> None:
        """Give ``user`` ``role`` (replacing any other). Admin only."""
        user = check_name(user, "user")
        if role not in ROLES:
            raise UserError(f"role {role!r}: use one of {', '.join(ROLES)}")
        with self._tx() as session:
            self._require(session, "roles.grant", f"{user} -> {role}", ("admin",))
            principal = self._principal(session, user, create=True)
            current = session.get(RoleAssignment, principal.id)
            before = {"user": user, "role": current.role if current else None}
            if current is not None and current.role == role:
                return
            if current is not None and current.role == "admin" and len(self._admins(session)) == 1:
                raise UserError(f"{user!r} is the last admin; grant admin to someone else first")
            if current is None:
                session.add(
                    RoleAssignment(principal_id=principal.id, role=role, granted_by=self.actor, granted_at=utcnow())
                )
            else:
                current.role, current.granted_by, current.granted_at = role, self.actor, utcnow()
            audit.append(session, self.actor, "roles.grant", user, before=before, after={"user": user, "role": role})

    def revoke_role(self, user: str) -> None:
        """Take ``user``'s role away (it keeps ownership of its sources, but no rights). Admin only."""
        with self._tx() as session:
            self._require(session, "roles.revoke", user, ("admin",))
            principal = self._principal(session, user)
            current = session.get(RoleAssignment, principal.id) if principal else None
            if current is None:
                raise UserError(f"{user!r} has no role; `ci-pipeline roles list` shows who has one")
            if current.role == "admin" and len(self._admins(session)) == 1:
                raise UserError(f"{user!r} is the last admin; grant admin to someone else first")
            session.delete(current)
            audit.append(session, self.actor, "roles.revoke", user, before={"user": user, "role": current.role})

    def roles(self) -> list[dict]:
        """Everyone with a role, for any user with a role."""
        with self._tx() as session:
            self._require(session, "roles.list", "roles", ROLES)
            rows = session.execute(
                select(Principal.name, RoleAssignment.role, RoleAssignment.granted_by, RoleAssignment.granted_at)
                .join(RoleAssignment, RoleAssignment.principal_id == Principal.id)
                .order_by(Principal.name)
            )
            return [
                {"user": n, "role": r, "granted_by": g, "granted_at": a.isoformat(timespec="seconds")}
                for n, r, g, a in rows
            ]

    # -- connections ------------------------------------------------------------------------------------------
    def add_connection(self, name: str, type_name: str, settings: Mapping[str, str], *, consent: bool) -> dict:
        """Create a connection from plain settings and secret references. Admin only.

        Raises:
            ConsentRequired: the type sends data outside the platform and ``consent`` is False (the message holds
                the text to agree to).
        """
        name = check_name(name, "connection name")
        with self._tx() as session:
            self._require(session, "connections.add", name, ("admin",))
            fields, refs = check_settings(type_name, settings, self.resolver.roots)
            if session.scalar(select(Connection.id).where(Connection.name == name)) is not None:
                raise UserError(f"a connection named {name!r} exists; choose another name or edit it")
            self._check_consent(CONNECTION_TYPES[type_name].leaves_platform, consent, name)
            now = utcnow()
            connection = Connection(
                name=name,
                type=type_name,
                fields=fields,
                secret_refs=refs,
                created_by=self.actor,
                created_at=now,
                updated_at=now,
            )
            session.add(connection)
            session.flush()
            if CONNECTION_TYPES[type_name].leaves_platform:
                self._record_consent(session, connection)
            audit.append(session, self.actor, "connections.add", name, after=self._record(connection))
            return self._admin_view(session, connection)

    def _check_consent(self, needed: bool, consent: bool, name: str) -> None:
        if needed and not consent:
            raise ConsentRequired(
                f"connection {name!r} sends customer data outside the platform. Read the text below; if you agree, "
                f"run the command again with --consent (consent text version {CONSENT_VERSION}):\n\n"
                f"{consent_text()}"
            )

    def _record_consent(self, session: Session, connection: Connection) -> None:
        record = Consent(
            connection_id=connection.id,
            connection_name=connection.name,
            principal=self.actor,
            text_version=CONSENT_VERSION,
            text_sha256=consent_sha256(),
            agreed_at=utcnow(),
        )
        session.add(record)
        audit.append(
            session,
            self.actor,
            "consent.record",
            connection.name,
            after={"text_version": CONSENT_VERSION, "text_sha256": record.text_sha256},
        )

    def edit_connection(
        self, name: str, settings: Mapping[str, str], *, rename: str | None = None, consent: bool = False
    ) -> dict:
        """Change some settings (or the name) of a connection. Admin only.

        Pointing a connection that leaves the platform at another destination needs ``consent`` again.
        """
        if not settings and rename is None:
            raise UserError(f"connections edit {name}: nothing to change; give settings to change or --rename")
        with self._tx() as session:
            self._require(session, "connections.edit", name, ("admin",))
            connection = self._connection(session, name)
            fields, refs = check_settings(connection.type, settings, self.resolver.roots, partial=True)
            before = self._record(connection)
            ctype = CONNECTION_TYPES[connection.type]
            merged_refs = dict(connection.secret_refs)
            if any(k in ctype.one_of for k in refs):
                # Switching from a client secret to a certificate (say) drops the one it replaces.
                merged_refs = {k: v for k, v in merged_refs.items() if k not in ctype.one_of}
            merged_refs.update(refs)
            destination_changed = "url" in fields or "url" in refs
            attachment = session.get(DataverseAttachment, 1)
            if "org_url" in fields and attachment is not None and attachment.connection_id == connection.id:
                raise UserError(
                    f"connection {name!r} is this environment's attached Dataverse environment; pointing it elsewhere "
                    "would attach another one: run `ci-pipeline connections detach-dataverse` first"
                )
            self._check_consent(ctype.leaves_platform and destination_changed, consent, name)
            if rename is not None:
                rename = check_name(rename, "--rename")
                if session.scalar(select(Connection.id).where(Connection.name == rename)) is not None:
                    raise UserError(f"a connection named {rename!r} exists; choose another name")
                connection.name = rename
            connection.fields = {**connection.fields, **fields}
            connection.secret_refs = merged_refs
            connection.updated_at = utcnow()
            if ctype.leaves_platform and destination_changed:
                self._record_consent(session, connection)
            audit.append(
                session, self.actor, "connections.edit", connection.name, before=before, after=self._record(connection)
            )
            return self._admin_view(session, connection)

    def _admin_view(self, session: Session, connection: Connection) -> dict:
        consent = session.scalars(
            select(Consent).where(Consent.connection_id == connection.id).order_by(Consent.id.desc())
        ).first()
        return {
            **self._record(connection),
            "created_by": connection.created_by,
            "created_at": connection.created_at.isoformat(timespec="seconds"),
            "updated_at": connection.updated_at.isoformat(timespec="seconds"),
            "shared_with": self._shared_with(session, connection),
            "used_by": self._bindings(session, connection),
            **({"capacity": self._capacity(session, connection)} if connection.type == "dataverse" else {}),
            "consent": None
            if consent is None
            else {
                "by": consent.principal,
                "at": consent.agreed_at.isoformat(timespec="seconds"),
                "text_version": consent.text_version,
            },
        }

    @staticmethod
    def _contributor_view(connection: Connection) -> dict:
        # Contributors use a connection by its name; where and how it connects is the admins' business.
        return {"name": connection.name, "type": connection.type}

    def connections(self) -> list[dict]:
        """The connections the acting user may see: all, in full, for admins; the shared ones' name and type else."""
        with self._tx() as session:
            role = self._require(session, "connections.list", "connections", ROLES)
            all_connections = session.scalars(select(Connection).order_by(Connection.name)).all()
            if role == "admin":
                return [self._admin_view(session, c) for c in all_connections]
            return [self._contributor_view(c) for c in all_connections if self._is_shared_with(session, c, self.actor)]

    def connection(self, name: str) -> dict:
        """One connection as the acting user may see it (see :meth:`connections`)."""
        with self._tx() as session:
            role = self._require(session, "connections.show", name, ROLES)
            if role == "admin":
                # Admins see every connection: one that is not found does not exist.
                return self._admin_view(session, self._connection(session, name))
            found = session.scalar(select(Connection).where(Connection.name == name))
            if found is None or not self._is_shared_with(session, found, self.actor):
                raise UserError(f"no connection named {name!r} is shared with you; ask an admin to share it")
            return self._contributor_view(found)

    def share(self, name: str, user: str) -> None:
        """Let contributor ``user`` use connection ``name``. Admin only."""
        with self._tx() as session:
            self._require(session, "connections.share", f"{name} -> {user}", ("admin",))
            connection = self._connection(session, name)
            role = self._role_of(session, user)
            if role != "contributor":
                raise UserError(
                    f"{user!r} is {role or 'not a user with a role'}; connections are shared with contributors "
                    f"(admins use every connection already): "
                    f"`ci-pipeline roles grant {shlex.quote(user)} contributor` first"
                )
            principal = self._principal(session, user)
            if session.get(ConnectionGrant, (connection.id, principal.id)) is not None:
                return
            session.add(
                ConnectionGrant(
                    connection_id=connection.id, principal_id=principal.id, granted_by=self.actor, granted_at=utcnow()
                )
            )
            audit.append(session, self.actor, "connections.share", name, after={"shared_with": user})

    def unshare(self, name: str, user: str) -> list[str]:
        """Stop sharing ``name`` with ``user``. Admin only. Returns ``user``'s bindings that now cannot run."""
        with self._tx() as session:
            self._require(session, "connections.unshare", f"{name} -> {user}", ("admin",))
            connection = self._connection(session, name)
            principal = self._principal(session, user)
            grant = session.get(ConnectionGrant, (connection.id, principal.id)) if principal else None
            if grant is None:
                raise UserError(f"connection {name!r} is not shared with {user!r}")
            session.delete(grant)
            audit.append(session, self.actor, "connections.unshare", name, before={"shared_with": user})
            return [f"{b['kind']} {b['name']}" for b in self._bindings(session, connection) if b["owner"] == user]

    def remove_connection(self, name: str, *, detach: bool = False) -> list[str]:
        """Delete a connection. Admin only.

        A connection in use is refused, naming what uses it and who owns that; with ``detach`` its exports are
        detached (kept, inactive) and its enrichments deactivated first. Returns what was detached.
        """
        with self._tx() as session:
            self._require(session, "connections.remove", name, ("admin",))
            connection = self._connection(session, name)
            users = [f"{u['kind']} {u['name']!r} (owner {u['owner']})" for u in self._bindings(session, connection)]
            attachment = session.get(DataverseAttachment, 1)
            attached = attachment is not None and attachment.connection_id == connection.id
            if attached:
                users.append("this environment's Dataverse attachment")
            if users and not detach:
                listed = "; ".join(users)
                raise UserError(
                    f"connection {name!r} is in use by {listed}; detach them first or run again with --detach "
                    "(exports are kept, inactive; enrichments are deactivated; the Dataverse environment is detached)"
                )
            detached = []
            for binding in session.scalars(select(Binding).where(Binding.connection_id == connection.id)):
                before = {"connection": name, "active": binding.active}
                binding.connection_id, binding.active, binding.detached_from = None, False, name
                action = "exports.detach" if binding.kind == "export" else "enrichments.deactivate"
                audit.append(session, self.actor, action, binding.name, before=before, after={"active": False})
                detached.append(f"{binding.kind} {binding.name}")
            if attached:
                session.delete(attachment)
                audit.append(session, self.actor, "dataverse.detach", attachment.org_url)
                detached.append(f"Dataverse attachment {attachment.org_url}")
            before = self._record(connection)
            session.delete(connection)
            audit.append(session, self.actor, "connections.remove", name, before=before)
            return detached

    def _not_shared(self, name: str) -> str:
        """Why the acting user may not use connection ``name`` at run time, and the admin's fix."""
        return (
            f"connection {name!r} is not shared with {self.actor!r}, who runs it; an admin shares it with "
            f"`ci-pipeline connections share {shlex.quote(name)} {shlex.quote(self.actor)}`"
        )

    def _unknown(self, session: Session, name: str, role: str) -> str:
        """Why connection ``name`` cannot be used: it does not exist; the near miss among the names the acting user
        may use (a contributor is not told the names of connections not shared with it)."""
        names = session.scalars(select(Connection).order_by(Connection.name)).all()
        usable = [c.name for c in names if role == "admin" or self._is_shared_with(session, c, self.actor)]
        close = difflib.get_close_matches(name, usable, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"connection {name!r} does not exist; {hint}`ci-pipeline connections list` shows the ones you may use"

    def usable_connections(self) -> tuple[str, dict[str, str], set[str]] | None:
        """(acting user's role, name -> type of the connections it may use, enrichments whose binding governance
        holds inactive), for checks of a configuration before a run; None when it may use none (no role, a viewer,
        an environment nobody initialised). A read: needs no right, so it is not audited."""
        with self.store.session() as session:
            role = self._role_of(session, self.actor)
            if role not in ("admin", "contributor"):
                return None
            usable = {
                c.name: c.type
                for c in session.scalars(select(Connection).order_by(Connection.name))
                if role == "admin" or self._is_shared_with(session, c, self.actor)
            }
            inactive = set(
                session.scalars(select(Binding.name).where(Binding.kind == "enrichment", Binding.active.is_(False)))
            )
            return role, usable, inactive

    def resolve_connection(self, name: str) -> dict:
        """A connection's settings with its secrets resolved, for code that connects (never for printing).

        Admins and the contributors it is shared with may use it; every value is registered for redaction.
        """
        with self._tx() as session:
            role = self._require(session, "connections.use", name, ("admin", "contributor"))
            connection = session.scalar(select(Connection).where(Connection.name == name))
            if connection is None:
                # A mistake (a typo), not an access attempt: told with the near miss, not audited.
                raise UserError(self._unknown(session, name, role))
            if role != "admin" and not self._is_shared_with(session, connection, self.actor):
                raise _Refused("connections.use", name, self._not_shared(name))
            fields, refs, type_name = dict(connection.fields), dict(connection.secret_refs), connection.type
        secrets = {key: self.resolver.resolve(ref, f"connection {name!r} {key}") for key, ref in refs.items()}
        return {"name": name, "type": type_name, **fields, **secrets}

    # -- runs -------------------------------------------------------------------------------------------------
    def initialised(self) -> bool:
        """True once someone ran ``init`` (the environment has an admin). Needs no role."""
        with self.store.session() as session:
            return bool(self._admins(session))

    def environment_id(self) -> str:
        """This pipeline environment's id (made once, kept for ever): what the sink's attachment marker records."""
        with self.store.session() as session:
            found = session.get(Environment, 1)
            if found is None:
                found = Environment(slot=1, environment_id=str(uuid.uuid4()), created_at=utcnow())
                session.add(found)
            return found.environment_id

    def require_run(self, what: str) -> str:
        """Raise :class:`AccessDenied` (audited) unless the acting user may launch runs (admin or contributor).

        ``what`` names the run (job and run id) for the audit log. Returns the role.
        """
        with self._tx() as session:
            return self._require(session, "runs.launch", what, ("admin", "contributor"))

    def use_connection(self, name: str, key: str, expected_type: str, *, audit_refusal: bool = True) -> dict:
        """Resolve connection ``name`` that configuration key ``key`` names, for a run (see :meth:`resolve_connection`).

        The messages name the key, the connection and the fix: a removed connection, another type, one not shared
        with the acting user (refused and audited; ``audit_refusal=False`` only for a caller that asks again every
        few seconds and has audited the same refusal once already: the new-file sensor).
        """
        with self._tx(audit_refusal) as session:
            role = self._require(session, "connections.use", name, ("admin", "contributor"))
            connection = session.scalar(select(Connection).where(Connection.name == name))
            if connection is None:
                raise UserError(
                    f"{key}: connection {name!r} does not exist (removed?); an admin adds it again with "
                    f"`ci-pipeline connections add {shlex.quote(name)} --type {expected_type} ...`, or change {key}"
                )
            if connection.type != expected_type:
                raise UserError(
                    f"{key}: connection {name!r} is a {connection.type} connection; this needs a {expected_type} one"
                )
            if role != "admin" and not self._is_shared_with(session, connection, self.actor):
                raise _Refused("connections.use", name, f"{key}: {self._not_shared(name)}")
            fields, refs = dict(connection.fields), dict(connection.secret_refs)
        secrets = {k: self.resolver.resolve(ref, f"{key}: connection {name!r} {k}") for k, ref in refs.items()}
        return {"name": name, "type": expected_type, **fields, **secrets}

    def record_capacity(self, target: str, report: Mapping, connection_name: str | None = None) -> None:
        """Keep one storage entitlement report of the Dataverse environment ``target`` (admin or contributor)."""
        with self._tx() as session:
            self._require(session, "capacity.record", target, ("admin", "contributor"))
            session.add(
                CapacityReport(
                    target=target,
                    connection_name=connection_name,
                    report=dict(report),
                    recorded_by=self.actor,
                    recorded_at=utcnow(),
                )
            )

    def capacity(self, target: str) -> dict | None:
        """The newest capacity report recorded for ``target`` (any role), or None."""
        with self._tx() as session:
            self._require(session, "capacity.show", target, ROLES)
            return self._latest_capacity(session, target)

    def _capacity(self, session: Session, connection: Connection) -> dict | None:
        return self._latest_capacity(session, connection.fields["org_url"].rstrip("/"))

    @staticmethod
    def _latest_capacity(session: Session, target: str) -> dict | None:
        found = session.scalars(
            select(CapacityReport).where(CapacityReport.target == target).order_by(CapacityReport.id.desc())
        ).first()
        if found is None:
            return None
        return {**found.report, "recorded_at": found.recorded_at.isoformat(timespec="seconds")}

    # -- exports and enrichments ------------------------------------------------------------------------------
    def is_active(self, kind: str, name: str) -> bool:
        """True when the export or enrichment ``name`` is bound to a connection and active (any role may ask).

        The pipeline skips an inactive one (detached from a removed connection, or deactivated) instead of failing.
        """
        found = self.binding(kind, name)
        return found is not None and found["active"]

    def binding(self, kind: str, name: str) -> dict | None:
        """One export or enrichment binding: its connection (None when detached), owner, state; None if unknown."""
        if kind not in BINDING_KINDS:
            raise UserError(f"{kind!r}: bindings are {' or '.join(BINDING_KINDS)}")
        with self._tx() as session:
            self._require(session, f"{kind}s.show", name, ROLES)
            row = session.execute(
                select(Binding, Principal.name, Connection.name)
                .join(Principal, Principal.id == Binding.owner_id)
                .outerjoin(Connection, Connection.id == Binding.connection_id)
                .where(Binding.kind == kind, Binding.name == name)
            ).first()
            if row is None:
                return None
            binding, owner, connection = row
            return {
                "kind": kind,
                "name": name,
                "connection": connection,
                "owner": owner,
                "active": binding.active,
                "detached_from": binding.detached_from,
            }

    def _owned_binding(self, session: Session, kind: str, name: str, action: str) -> Binding:
        role = self._require(session, action, name, ("admin", "contributor"))
        found = session.scalar(select(Binding).where(Binding.kind == kind, Binding.name == name))
        if found is None:
            raise UserError(f"no {kind} named {name!r}; `ci-pipeline {kind}s list` shows them")
        owner = session.get(Principal, found.owner_id).name
        if role != "admin" and owner != self.actor:
            raise _Refused(action, name, f"{kind} {name!r} belongs to {owner!r}; only they or an admin change it")
        return found

    def detach(self, kind: str, name: str) -> None:
        """Make an export (or enrichment) inactive, keeping it: its owner or an admin. The pipeline skips it."""
        action = "exports.detach" if kind == "export" else "enrichments.deactivate"
        with self._tx() as session:
            found = self._owned_binding(session, kind, name, action)
            if not found.active:
                return
            connection = session.get(Connection, found.connection_id) if found.connection_id else None
            before = {"connection": connection.name if connection else None, "active": True}
            found.connection_id, found.active = None, False
            found.detached_from = connection.name if connection else found.detached_from
            audit.append(session, self.actor, action, name, before=before, after={"active": False})

    def unbind(self, kind: str, name: str) -> None:
        """Forget an export or enrichment binding altogether: its owner or an admin."""
        with self._tx() as session:
            found = self._owned_binding(session, kind, name, f"{kind}s.remove")
            before = {"connection_id": found.connection_id, "active": found.active}
            session.delete(found)
            audit.append(session, self.actor, f"{kind}s.remove", name, before=before)

    # -- exports and enrichments ------------------------------------------------------------------------------
    def bind(self, kind: str, name: str, connection_name: str) -> None:
        """Bind an export or enrichment ``name`` to a connection: admins any, contributors only shared ones."""
        if kind not in BINDING_KINDS:
            raise UserError(f"{kind!r}: bindings are {' or '.join(BINDING_KINDS)}")
        name = check_name(name, f"{kind} name")
        action = f"{kind}s.bind"
        with self._tx() as session:
            role = self._require(session, action, name, ("admin", "contributor"))
            connection = session.scalar(select(Connection).where(Connection.name == connection_name))
            if connection is None or (role != "admin" and not self._is_shared_with(session, connection, self.actor)):
                raise _Refused(
                    action,
                    name,
                    f"connection {connection_name!r} is not shared with {self.actor!r}; contributors bind {kind}s "
                    "to shared connections only (ask an admin to share it)",
                )
            existing = session.scalar(select(Binding).where(Binding.kind == kind, Binding.name == name))
            before = None
            if existing is not None:
                owner = session.get(Principal, existing.owner_id).name
                if role != "admin" and owner != self.actor:
                    raise _Refused(
                        action, name, f"{kind} {name!r} belongs to {owner!r}; only they or an admin change it"
                    )
                before = {"connection": existing.detached_from, "active": existing.active}
                existing.connection_id, existing.active, existing.detached_from = connection.id, True, None
            else:
                owner_principal = self._principal(session, self.actor)
                session.add(
                    Binding(
                        kind=kind,
                        name=name,
                        connection_id=connection.id,
                        owner_id=owner_principal.id,
                        active=True,
                        created_at=utcnow(),
                    )
                )
            audit.append(session, self.actor, action, name, before=before, after={"connection": connection_name})

    def bindings(self) -> list[dict]:
        """Exports and enrichments with their connection (None when detached), owner and state.

        Admins see all; others see their own, and the connection's name only while it is shared with them (the
        one it was detached from they had used by name).
        """
        with self._tx() as session:
            role = self._require(session, "bindings.list", "bindings", ROLES)
            rows = session.execute(
                select(Binding, Principal.name, Connection)
                .join(Principal, Principal.id == Binding.owner_id)
                .outerjoin(Connection, Connection.id == Binding.connection_id)
                .order_by(Binding.kind, Binding.name)
            )
            result = []
            for binding, owner, connection in rows:
                if role != "admin" and owner != self.actor:
                    continue
                visible = connection is not None and (
                    role == "admin" or self._is_shared_with(session, connection, self.actor)
                )
                result.append(
                    {
                        "kind": binding.kind,
                        "name": binding.name,
                        "connection": connection.name if visible else None,
                        "owner": owner,
                        "active": binding.active,
                        "detached_from": binding.detached_from,
                    }
                )
            return result

    # -- the lake folder ------------------------------------------------------------------------------------
    def attach_lake(self, lake_url: str, environment: str, take_over: Callable[[], str | None]) -> str | None:
        """Make ``environment`` the owner of the lake folder ``lake_url``: ``take_over()`` rewrites its marker and
        returns the environment that owned it. Admin only; audited as ``lake.attach`` when the owner changes."""
        with self._tx() as session:
            self._require(session, "lake.attach", lake_url, ("admin",))
            before = take_over()
            if before != environment:
                after = {"environment": environment}
                audit.append(session, self.actor, "lake.attach", lake_url, before={"environment": before}, after=after)
            return before

    # -- Dataverse attachment ---------------------------------------------------------------------------------
    def attach_dataverse(self, connection_name: str) -> None:
        """Record that this environment publishes to the Dataverse environment of ``connection_name``. Admin only.

        At most one: attaching another is refused until the first is detached.
        """
        with self._tx() as session:
            self._require(session, "dataverse.attach", connection_name, ("admin",))
            connection = self._connection(session, connection_name)
            if connection.type != "dataverse":
                raise UserError(f"connection {connection_name!r} is {connection.type}, not dataverse")
            current = session.get(DataverseAttachment, 1)
            if current is not None:
                if current.connection_id == connection.id:
                    return
                raise UserError(
                    f"this environment is already attached to another environment: Dataverse {current.org_url}; "
                    "detach it first with `ci-pipeline connections detach-dataverse`"
                )
            session.add(
                DataverseAttachment(
                    slot=1,
                    connection_id=connection.id,
                    org_url=connection.fields["org_url"],
                    attached_by=self.actor,
                    attached_at=utcnow(),
                )
            )
            audit.append(session, self.actor, "dataverse.attach", connection.fields["org_url"])

    def detach_dataverse(self) -> str | None:
        """Forget the attached Dataverse environment; returns its URL (None if nothing was attached). Admin only."""
        with self._tx() as session:
            self._require(session, "dataverse.detach", "dataverse", ("admin",))
            current = session.get(DataverseAttachment, 1)
            if current is None:
                return None
            session.delete(current)
            audit.append(session, self.actor, "dataverse.detach", current.org_url)
            return current.org_url

    def dataverse_attachment(self) -> dict | None:
        """The attached Dataverse environment (org URL, connection, who and when), or None."""
        with self._tx() as session:
            self._require(session, "dataverse.show", "dataverse", ROLES)
            current = session.get(DataverseAttachment, 1)
            if current is None:
                return None
            return {
                "org_url": current.org_url,
                "connection": session.get(Connection, current.connection_id).name,
                "attached_by": current.attached_by,
                "attached_at": current.attached_at.isoformat(timespec="seconds"),
            }

    # -- data sources -----------------------------------------------------------------------------------------
    def _register_sources(self, session: Session, source_owners: Mapping[str, str]) -> list[str]:
        known = set(session.scalars(select(DataSource.name)))
        added = []
        for name, owner in sorted(source_owners.items()):
            if name in known:
                continue
            principal = self._principal(session, check_name(owner, f"sources.{name}.owner"), create=True)
            session.add(DataSource(name=name, owner_id=principal.id, created_at=utcnow()))
            audit.append(session, self.actor, "sources.register", name, after={"owner": owner, "from": "configuration"})
            added.append(name)
        return added

    def sources(self, source_owners: Mapping[str, str]) -> dict[str, list[dict]]:
        """The sources, as ``{"mine": [...], "others": [...]}`` for the acting user (any role).

        Sources the configuration gained since ``init`` are registered first, with their configured owner.
        """
        with self._tx() as session:
            self._require(session, "sources.list", "sources", ROLES)
            self._register_sources(session, source_owners)
            rows = session.execute(
                select(DataSource.name, Principal.name)
                .join(Principal, Principal.id == DataSource.owner_id)
                .order_by(DataSource.name)
            )
            result: dict[str, list[dict]] = {"mine": [], "others": []}
            for name, owner in rows:
                entry = {"name": name, "owner": owner, "in_configuration": name in source_owners}
                result["mine" if owner == self.actor else "others"].append(entry)
            return result

    def require_source_manager(self, source: str, action: str) -> None:
        """Raise :class:`AccessDenied` (audited) unless the acting user owns ``source`` or is admin.

        ``action`` names what is attempted (``sources.refresh``, ``sources.delete``, ...).
        """
        with self._tx() as session:
            self._check_source_manager(session, source, action)

    def _check_source_manager(self, session: Session, source: str, action: str) -> DataSource:
        role = self._require(session, action, source, ("admin", "contributor"))
        found = session.scalar(select(DataSource).where(DataSource.name == source))
        if found is None:
            raise UserError(f"no data source named {source!r}; `ci-pipeline sources list` shows them")
        owner = session.get(Principal, found.owner_id).name
        if role != "admin" and owner != self.actor:
            raise _Refused(action, source, _not_your_source(source, owner, action))
        return found

    def set_source_owner(self, source: str, owner: str) -> None:
        """Hand ``source`` to ``owner``. Its owner or an admin only."""
        owner = check_name(owner, "owner")
        with self._tx() as session:
            found = self._check_source_manager(session, source, "sources.set-owner")
            before = session.get(Principal, found.owner_id).name
            found.owner_id = self._principal(session, owner, create=True).id
            audit.append(
                session, self.actor, "sources.set-owner", source, before={"owner": before}, after={"owner": owner}
            )

    def remove_source(self, source: str, dependents: Sequence[str]) -> None:
        """Forget ``source``. Its owner or an admin only; refused while ``dependents`` (what uses it) remain."""
        with self._tx() as session:
            found = self._check_source_manager(session, source, "sources.delete")
            if dependents:
                raise UserError(
                    f"source {source!r} is used by {'; '.join(dependents)}; remove those uses from the "
                    "configuration first"
                )
            owner = session.get(Principal, found.owner_id).name
            session.delete(found)
            audit.append(session, self.actor, "sources.delete", source, before={"owner": owner})

    # -- audit ------------------------------------------------------------------------------------------------
    def audit_entries(self, limit: int | None = None) -> list[dict]:
        """The newest ``limit`` audit rows (all when None), oldest first. Admin only."""
        with self._tx() as session:
            self._require(session, "audit.list", "audit", ("admin",))
            query = select(AuditEntry).order_by(AuditEntry.id.desc())
            if limit:
                query = query.limit(limit)
            rows = list(reversed(session.scalars(query).all()))
            return [
                {
                    "id": r.id,
                    "at": r.at.isoformat(timespec="seconds"),
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "outcome": r.outcome,
                    "before": r.before,
                    "after": r.after,
                }
                for r in rows
            ]

    def verify_audit(self) -> audit.ChainReport:
        """Check the whole hash chain (any user with a role)."""
        with self._tx() as session:
            self._require(session, "audit.verify", "audit", ROLES)
            return audit.verify_chain(session)


def source_owners(config) -> dict[str, str]:
    """``{source: owner}`` from a loaded configuration (the owners that seed ownership)."""
    return {name: source.owner for name, source in config.sources.items()}


def default_resolver(config) -> SecretResolver:
    """The resolver for a configuration: ``file:`` roots from its folder and ``$CI_PIPELINE_SECRET_ROOTS``."""
    from ci_pipeline.governance.secrets import secret_roots

    return SecretResolver(secret_roots(Path(config.base_dir)))
