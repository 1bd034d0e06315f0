"""`ci-pipeline roles list|grant|revoke`: who is admin, contributor or viewer in this environment."""

from __future__ import annotations

from ci_pipeline.governance.cli_support import add_identity, open_for, print_json, print_table


def register(subparsers) -> None:
    parser = subparsers.add_parser("roles", help="list, grant and revoke roles (admin, contributor, viewer)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="everyone with a role")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    grant = actions.add_parser("grant", help="give a user a role (admins only)")
    grant.add_argument("user", help="user name, as given to --as or $CI_PIPELINE_USER")
    grant.add_argument("role", choices=["admin", "contributor", "viewer"], help="admin, contributor or viewer")
    grant.set_defaults(func=run_grant)
    revoke = actions.add_parser("revoke", help="take a user's role away (admins only)")
    revoke.add_argument("user", help="user name, as given to --as or $CI_PIPELINE_USER")
    revoke.set_defaults(func=run_revoke)
    for sub in (listing, grant, revoke):
        add_identity(sub)


def run_list(args) -> int:
    _, gov = open_for(args)
    rows = gov.roles()
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["user", "role", "granted_by", "granted_at"], "(nobody has a role; run `ci-pipeline init`)")
    return 0


def run_grant(args) -> int:
    _, gov = open_for(args)
    gov.grant_role(args.user, args.role)
    print(f"{args.user} is {args.role}.")
    return 0


def run_revoke(args) -> int:
    _, gov = open_for(args)
    gov.revoke_role(args.user)
    print(f"{args.user} has no role any more (and so no rights).")
    return 0
