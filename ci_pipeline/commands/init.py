"""`ci-pipeline init`: set up the environment's governance; the first caller becomes its administrator."""

from __future__ import annotations

from ci_pipeline.governance.cli_support import add_identity, open_for


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "init",
        help="initialise the environment (metadata store, first admin, source owners); safe to run again",
    )
    add_identity(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ci_pipeline.governance import source_owners

    config, gov = open_for(args)
    result = gov.init(source_owners(config), config.governance.service_principal)
    where = gov.store.url.render_as_string(hide_password=True)
    if result.created:
        print(f"Initialised the environment of {config.path} (metadata store {where}).")
        print(f"{gov.actor} is its administrator.")
    else:
        print(f"Already initialised (metadata store {where}; admins: {', '.join(result.admins)}); roles unchanged.")
    if result.role is None:
        print(f"{gov.actor} has no role in this environment; an admin grants one with `ci-pipeline roles grant`.")
    if result.service_principal:
        print(
            f"{result.service_principal} (governance.service_principal, who schedules and sensors act as) is a "
            "contributor; share with it the connections unattended runs use."
        )
    if result.new_sources:
        names = ", ".join(result.new_sources)
        print(f"Registered {len(result.new_sources)} source(s) with their configured owners: {names}")
    elif not result.created and not result.service_principal:
        print("Nothing changed.")
    return 0
