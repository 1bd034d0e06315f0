"""`ci-pipeline exports add|list|attach|detach|remove`: exports bound to governed connections.

An export of ``publish.exports`` that names a ``connection`` writes through that connection, and runs only while
it is bound to it here. Contributors bind exports to connections shared with them only; a detached export is kept,
inactive, and the pipeline skips it instead of failing.
"""

from __future__ import annotations

from ci_pipeline.governance.cli_support import add_identity, open_for, print_json, print_table


def register(subparsers) -> None:
    parser = subparsers.add_parser("exports", help="bind exports to connections; detach and remove them")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="bind an export to a connection shared with you")
    add.add_argument("name", help="the export's name (publish.exports[].name)")
    add.add_argument("--connection", required=True, help="the connection it writes through")
    add.set_defaults(func=run_add)
    attach = actions.add_parser("attach", help="bind a detached export to a connection again")
    attach.add_argument("name", help="the export's name")
    attach.add_argument("connection", help="the connection it writes through")
    attach.set_defaults(func=run_attach)
    listing = actions.add_parser("list", help="the exports you may see, with their connection and state")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    detach = actions.add_parser("detach", help="make an export inactive (kept; the pipeline skips it)")
    detach.add_argument("name", help="the export's name")
    detach.set_defaults(func=run_detach)
    remove = actions.add_parser("remove", help="forget an export's binding")
    remove.add_argument("name", help="the export's name")
    remove.set_defaults(func=run_remove)
    for sub in (add, attach, listing, detach, remove):
        add_identity(sub)


def run_add(args) -> int:
    config, gov = open_for(args)
    if gov.binding("export", args.name) is not None:
        from ci_pipeline.errors import UserError

        raise UserError(
            f"export {args.name!r} is bound already; `ci-pipeline exports attach {args.name} CONNECTION` moves it"
        )
    gov.bind("export", args.name, args.connection)
    print(f"Export {args.name} writes through connection {args.connection}.")
    _hint(config, args.name, args.connection)
    return 0


def run_attach(args) -> int:
    config, gov = open_for(args)
    gov.bind("export", args.name, args.connection)
    print(f"Export {args.name} is active again, writing through connection {args.connection}.")
    _hint(config, args.name, args.connection)
    return 0


def _hint(config, name: str, connection: str) -> None:
    """Say what the configuration still needs for the binding to take effect."""
    named = {e.name: e.connection for e in config.publish.exports}
    if named.get(name) != connection:
        print(
            f"The configuration must name it too: under publish.exports add (or change) "
            f"{{name: {name}, connection: {connection}}}."
        )


def run_list(args) -> int:
    _, gov = open_for(args)
    rows = [b for b in gov.bindings() if b["kind"] == "export"]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        row["state"] = "active" if row["active"] else f"detached from {row['detached_from'] or '?'}: skipped"
    print_table(rows, ["name", "connection", "owner", "state"], "(no exports you may see)")
    return 0


def run_detach(args) -> int:
    _, gov = open_for(args)
    gov.detach("export", args.name)
    print(f"Export {args.name} is detached: kept, inactive; runs skip it until it is attached again.")
    return 0


def run_remove(args) -> int:
    _, gov = open_for(args)
    gov.unbind("export", args.name)
    print(f"Export {args.name}'s binding is removed; remove it from publish.exports as well.")
    return 0
