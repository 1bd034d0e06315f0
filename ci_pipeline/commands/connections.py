"""`ci-pipeline connections add|list|show|edit|share|unshare|remove`: where data may go, and with which secrets.

Secrets are given as references only (``env:NAME``, ``keyvault://vault/secret``, ``file:PATH``); values are never
stored or printed. Admins manage connections; contributors see the name and type of those shared with them.
"""

from __future__ import annotations

from ci_pipeline.governance.cli_support import add_identity, open_for, print_json, print_table

#: Every setting of every connection type, as a command-line option (``org_url`` -> ``--org-url``).
_SETTINGS = {
    "org_url": "dataverse: the environment URL, https://<org>.crm.dynamics.com",
    "tenant_id": "dataverse: the Entra ID tenant",
    "client_id": "dataverse: the app registration's client id",
    "client_secret": "dataverse: secret reference to the client secret",
    "certificate": "dataverse: secret reference to the client certificate (PEM), instead of a client secret",
    "account": "adls: the storage account name",
    "container": "adls: the container (file system)",
    "account_key": "adls: secret reference to the account key",
    "sas_token": "adls: secret reference to a SAS token",
    "connection_string": "adls: secret reference to a connection string",
    "url": "http-enrichment: the provider's https URL; webhook: secret reference to the URL (it holds a token)",
    "api_key": "http-enrichment: secret reference to the API key",
}


def _add_settings(parser) -> None:
    for key, help_text in _SETTINGS.items():
        parser.add_argument("--" + key.replace("_", "-"), dest=key, metavar="VALUE", help=help_text)


def _settings(args) -> dict[str, str]:
    return {key: getattr(args, key) for key in _SETTINGS if getattr(args, key) is not None}


def register(subparsers) -> None:
    from ci_pipeline.governance import CONNECTION_TYPES

    parser = subparsers.add_parser("connections", help="connections to Dataverse, storage, providers and webhooks")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="create a connection (admins only)")
    add.add_argument("name", help="the connection's name, which contributors see")
    add.add_argument("--type", required=True, choices=list(CONNECTION_TYPES), dest="type_name")
    _add_settings(add)
    add.add_argument("--consent", action="store_true", help="agree that the connection sends data outside")
    add.set_defaults(func=run_add)
    listing = actions.add_parser("list", help="the connections you may see")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    show = actions.add_parser("show", help="one connection (contributors: its name and type)")
    show.add_argument("name", help="connection name (see `ci-pipeline connections list`)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument(
        "--check", action="store_true", help="admins: resolve every secret reference now (values are never shown)"
    )
    show.set_defaults(func=run_show)
    edit = actions.add_parser("edit", help="change settings or the name of a connection (admins only)")
    edit.add_argument("name", help="connection name (see `ci-pipeline connections list`)")
    edit.add_argument("--rename", metavar="NEW_NAME", help="give the connection a new name")
    _add_settings(edit)
    edit.add_argument("--consent", action="store_true", help="agree again when the destination changes")
    edit.set_defaults(func=run_edit)
    share = actions.add_parser("share", help="let a contributor use a connection (admins only)")
    share.add_argument("name", help="connection name (see `ci-pipeline connections list`)")
    share.add_argument("user", help="the contributor's user name")
    share.set_defaults(func=run_share)
    unshare = actions.add_parser("unshare", help="stop sharing a connection with a contributor (admins only)")
    unshare.add_argument("name", help="connection name (see `ci-pipeline connections list`)")
    unshare.add_argument("user", help="the contributor's user name")
    unshare.set_defaults(func=run_unshare)
    remove = actions.add_parser("remove", help="delete a connection no export or enrichment uses (admins only)")
    remove.add_argument("name", help="connection name (see `ci-pipeline connections list`)")
    remove.add_argument(
        "--detach", action="store_true", help="first detach its exports (kept, inactive) and deactivate enrichments"
    )
    remove.set_defaults(func=run_remove)
    attach = actions.add_parser(
        "attach-dataverse", help="publish to this dataverse connection's environment (one per environment)"
    )
    attach.add_argument("name", help="connection name (see `ci-pipeline connections list`)")
    attach.set_defaults(func=run_attach)
    detach = actions.add_parser("detach-dataverse", help="forget the attached Dataverse environment (admins only)")
    detach.set_defaults(func=run_detach)
    for sub in (add, listing, show, edit, share, unshare, remove, attach, detach):
        add_identity(sub)


def run_add(args) -> int:
    _, gov = open_for(args)
    view = gov.add_connection(args.name, args.type_name, _settings(args), consent=args.consent)
    print(f"Added {view['type']} connection {view['name']}.")
    if view["consent"]:
        print(
            f"Consent recorded: {view['consent']['by']} at {view['consent']['at']} (text version "
            f"{view['consent']['text_version']})."
        )
    return 0


def run_list(args) -> int:
    _, gov = open_for(args)
    rows = gov.connections()
    if args.json:
        print_json(rows)
        return 0
    admin = rows and "fields" in rows[0]
    columns = ["name", "type", "shared_with", "used_by"] if admin else ["name", "type"]
    for row in rows if admin else []:
        row["used_by"] = [f"{u['kind']} {u['name']}" for u in row["used_by"]]
    print_table(rows, columns, "(no connections you may see)")
    return 0


def run_show(args) -> int:
    _, gov = open_for(args)
    view = gov.connection(args.name)
    if args.check:
        view["check"] = _check(gov, view)
    if args.json:
        print_json(view)
    else:
        print_table([{"setting": k, "value": v} for k, v in _flatten(view).items()], ["setting", "value"], "")
    return 0 if all(c["result"] == "ok" for c in view.get("check", [])) else 1


def _check(gov, view: dict) -> list[dict]:
    from ci_pipeline.enrich.http import header_problem
    from ci_pipeline.errors import UserError
    from ci_pipeline.lake import connection_string_problem

    results = []
    # Contributors' views hold no references: they never test the credentials; the run that uses them does.
    for secret in view.get("secrets", []):
        try:
            value = gov.resolver.resolve(secret["reference"], f"{view['name']} {secret['setting']}")
        except UserError as exc:
            results.append({"setting": secret["setting"], "result": str(exc)})
            continue
        # What the run would refuse, told now: an API key goes in a header; a connection string names its account.
        problem = {
            ("http-enrichment", "api_key"): header_problem,
            ("adls", "connection_string"): connection_string_problem,
        }.get((view.get("type"), secret["setting"]), lambda _: None)(value)
        results.append({"setting": secret["setting"], "result": problem or "ok"})
    return results


def _flatten(view: dict) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in view.items():
        if key == "fields":
            flat.update(value)
        elif key == "secrets":
            flat.update({f"secret {s['setting']}": s["reference"] for s in value})
        elif key == "check":
            flat.update({f"check {c['setting']}": c["result"] for c in value})
        elif key == "capacity":
            # The per-table rows stay in --json; the table shows the entitlement and what is used of it.
            flat.update({f"capacity {k}": v for k, v in (value or {}).items() if k != "tables"} or {key: None})
        elif key == "used_by":
            flat[key] = [f"{u['kind']} {u['name']} (owner {u['owner']})" for u in value]
        else:
            flat[key] = value
    return flat


def run_edit(args) -> int:
    _, gov = open_for(args)
    view = gov.edit_connection(args.name, _settings(args), rename=args.rename, consent=args.consent)
    print(f"Updated connection {view['name']}.")
    return 0


def run_share(args) -> int:
    _, gov = open_for(args)
    gov.share(args.name, args.user)
    print(f"Connection {args.name} is shared with {args.user}.")
    return 0


def run_unshare(args) -> int:
    _, gov = open_for(args)
    stranded = gov.unshare(args.name, args.user)
    print(f"Connection {args.name} is no longer shared with {args.user}.")
    if stranded:
        print(f"These of {args.user}'s bindings will fail until it is shared again: {', '.join(stranded)}")
    return 0


def run_remove(args) -> int:
    config, gov = open_for(args)
    detached = gov.remove_connection(args.name, detach=args.detach)
    if detached:
        print(f"Detached or deactivated: {', '.join(detached)}.")
    print(f"Removed connection {args.name}.")
    # The configuration's own keys are no bindings governance holds: the runs that read them now fail on them.
    for key in naming_keys(config, args.name):
        print(
            f"Note: {key} in {config.path} still names it; runs fail on it (failure notices go undelivered) until it "
            "names another connection or is removed"
        )
    return 0


def naming_keys(config, name: str) -> list[str]:
    """The configuration keys that name connection ``name`` outside the bindings (exports and enrichments)."""
    keys = {
        "lake.connection": config.lake.connection,
        "publish.sink.connection": config.publish.sink.connection,
        "orchestration.notifications.webhook_connection": config.orchestration.notifications.webhook_connection,
    }
    return [key for key, named in keys.items() if named == name]


def run_attach(args) -> int:
    _, gov = open_for(args)
    gov.attach_dataverse(args.name)
    print(f"This environment publishes to the Dataverse environment of connection {args.name}.")
    return 0


def run_detach(args) -> int:
    config, gov = open_for(args)
    url = gov.detach_dataverse()
    print(f"Detached Dataverse environment {url}." if url else "No Dataverse environment was attached.")
    where = _release_marker(config, gov)
    if where:
        print(f"Removed this environment's attachment marker from {where}.")
    return 0


def _release_marker(config, gov) -> str | None:
    """Remove the configured sink's attachment marker if this environment wrote it; where it was, else None."""
    from pathlib import Path

    from ci_pipeline.dataverse import open_dataverse_sink, open_sqlite_sink, sqlite_path

    sink = config.publish.sink
    if sink.kind == "sqlite":
        path = sqlite_path(sink.path, Path(config.base_dir))
        if not path.exists():
            return None
        opened, where = open_sqlite_sink(path), str(path)
    elif sink.kind == "dataverse":
        key = "publish.sink.connection"
        connection = gov.use_connection(sink.connection, key, "dataverse") if sink.connection else None
        opened = open_dataverse_sink(sink.dataverse, Path(config.base_dir), None, "detach", connection)
        where = connection["org_url"] if connection else sink.dataverse.url
    else:
        return None
    with opened:
        return where if opened.release(gov.environment_id()) else None
