"""`ci-pipeline sources list|set-owner|remove`: data sources grouped by who manages them."""

from __future__ import annotations

from ci_pipeline.governance.cli_support import add_identity, open_for, print_json, print_table


def register(subparsers) -> None:
    parser = subparsers.add_parser("sources", help="data sources: Managed by me / Managed by others, ownership")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the sources, in sections for you")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    owner = actions.add_parser("set-owner", help="hand a source to another user (its owner or an admin)")
    owner.add_argument("source", help="source name under 'sources' (see `ci-pipeline sources list`)")
    owner.add_argument("user", help="the new owner's user name")
    owner.set_defaults(func=run_set_owner)
    remove = actions.add_parser("remove", help="forget a source removed from the configuration (its owner or an admin)")
    remove.add_argument("source", help="source name under 'sources' (see `ci-pipeline sources list`)")
    remove.set_defaults(func=run_remove)
    for sub in (listing, owner, remove):
        add_identity(sub)


def run_list(args) -> int:
    from ci_pipeline.governance import source_owners

    config, gov = open_for(args)
    sections = gov.sources(source_owners(config))
    if args.json:
        print_json(sections)
        return 0
    for title, key in (("Managed by me", "mine"), ("Managed by others", "others")):
        print(f"{title}:")
        rows = [{**r, "note": None if r["in_configuration"] else "not in the configuration"} for r in sections[key]]
        print_table(rows, ["name", "owner", "note"], "  (none)")
        print()
    return 0


def run_set_owner(args) -> int:
    _, gov = open_for(args)
    gov.set_source_owner(args.source, args.user)
    print(f"Source {args.source} is managed by {args.user}.")
    return 0


def dependents(config, source: str) -> list[str]:
    """What in the configuration uses ``source``: its own entry, unify tables and activity tables."""
    uses = []
    if source in config.sources:
        uses.append(f"sources.{source} in {config.path}")
    if config.unify is not None:
        uses += [f"unify table {t.source}.{t.table}" for t in config.unify.tables if t.source == source]
    for name, act in config.activities.tables.items():
        if act.source == source or act.customer.source == source:
            uses.append(f"activity {name}")
    return uses


def run_remove(args) -> int:
    config, gov = open_for(args)
    gov.remove_source(args.source, dependents(config, args.source))
    print(f"Source {args.source} is no longer registered.")
    return 0
