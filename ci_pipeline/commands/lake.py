"""`ci-pipeline lake show|attach`: the environment that owns the lake folder (``ci_pipeline.lake_owner``)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("lake", help="which environment owns the lake folder; take it over after a rename")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="the environment that owns the lake folder, and since when")
    show.set_defaults(func=run_show)
    attach = actions.add_parser(
        "attach",
        help="make this configuration's environment (its `name`) the owner of the lake folder (admins, when governed)",
    )
    attach.add_argument(
        "--replace",
        metavar="ENVIRONMENT",
        help="the environment that owns it now, when this one replaces it (it was renamed); required to take over",
    )
    attach.set_defaults(func=run_attach)


def _open(args):
    from ci_pipeline.config import load_config
    from ci_pipeline.lake import Lake

    # The lake's place and credentials are all that is needed: a mistake elsewhere must not block the fix.
    config = load_config(args.config, references=False)
    return config, Lake.from_config(config.lake, config.base_dir)


def run_show(args) -> int:
    from ci_pipeline.lake_owner import lake_owner

    config, lake = _open(args)
    found = lake_owner(lake)
    if found is None:
        print(f"No environment owns lake {lake.url()} yet; the first run of {config.name!r} claims it.")
    else:
        mine = " (this configuration)" if found["environment"] == config.name else ""
        print(
            f"Lake {lake.url()} belongs to environment {found['environment']!r}{mine}, "
            f"since {found.get('attached_at')}."
        )
    return 0


def run_attach(args) -> int:
    from ci_pipeline.governance import acting_user, open_governance
    from ci_pipeline.governance.runtime import is_initialised
    from ci_pipeline.lake_owner import attach_lake

    config, lake = _open(args)

    def take_over() -> str | None:
        return attach_lake(lake, config.name, args.replace)

    if is_initialised(config):
        rules = open_governance(config, acting_user())
        try:
            before = rules.attach_lake(lake.url(), config.name, take_over)
        finally:
            rules.store.close()
    else:
        before = take_over()
    if before == config.name:
        print(f"Lake {lake.url()} already belongs to environment {config.name!r}; nothing changed.")
    elif before is None:
        print(f"Lake {lake.url()} now belongs to environment {config.name!r}.")
    else:
        print(f"Lake {lake.url()} now belongs to environment {config.name!r} (it belonged to {before!r}).")
    return 0
