"""`ci-pipeline audit list|verify`: the environment's change log and its hash chain."""

from __future__ import annotations

from ci_pipeline.errors import UserError
from ci_pipeline.governance.cli_support import add_identity, open_for, print_json, print_table


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="the governance audit log: list it, verify its hash chain")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the newest audit rows, oldest first (admins only)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50; 0 = all)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    verify = actions.add_parser("verify", help="check that no audit row was changed, removed or reordered")
    verify.set_defaults(func=run_verify)
    for sub in (listing, verify):
        add_identity(sub)


def run_list(args) -> int:
    if args.limit < 0:
        raise UserError(f"--limit {args.limit}: give 0 (all) or a positive number")
    _, gov = open_for(args)
    rows = gov.audit_entries(args.limit or None)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["id", "at", "actor", "action", "target", "outcome", "before", "after"], "(no audit rows)")
    return 0


def run_verify(args) -> int:
    _, gov = open_for(args)
    report = gov.verify_audit()
    if report.ok:
        print(f"audit log OK: {report.rows} rows, hash chain intact; head {report.head}")
        return 0
    print(
        f"audit log BROKEN at row {report.broken_id}: {report.reason}. Rows before it verify; restore the database "
        "from a backup and investigate who had write access to it."
    )
    return 1
