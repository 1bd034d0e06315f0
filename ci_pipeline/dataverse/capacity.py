"""Dataverse storage entitlement versus what the sink actually holds (spec/output-tables.md)."""

from __future__ import annotations

from ci_pipeline.dataverse.sink import TableUsage

#: Entitlement per 100,000 customer profiles (B2C): 15 GB database and 20 GB file storage. Log capacity is fixed.
DATABASE_GB_PER_100K = 15.0
FILE_GB_PER_100K = 20.0


def entitlement(profiles: int) -> dict[str, float]:
    """Database and file storage (GB) that ``profiles`` unified customer profiles entitle, pro rata.

    Examples:
        >>> entitlement(300_000)
        {'profiles': 300000, 'database_gb': 45.0, 'file_gb': 60.0}
    """
    blocks = profiles / 100_000
    return {
        "profiles": profiles,
        "database_gb": round(blocks * DATABASE_GB_PER_100K, 6),
        "file_gb": round(blocks * FILE_GB_PER_100K, 6),
    }


def capacity_report(usage: dict[str, TableUsage], profile_table: str) -> dict:
    """The entitlement for the published profile count next to the rows and bytes published per table.

    Args:
        usage: rows and bytes per logical table name.
        profile_table: logical name of the CustomerProfile table.
    """
    profiles = usage[profile_table].rows if profile_table in usage else 0
    used = sum(u.bytes for u in usage.values())
    estimate = entitlement(profiles)
    return {
        **estimate,
        "published_rows": sum(u.rows for u in usage.values()),
        "published_bytes": used,
        "published_gb": round(used / 1e9, 6),
        "database_used_percent": round(100 * used / (estimate["database_gb"] * 1e9), 3)
        if estimate["database_gb"]
        else None,
        "tables": {name: {"rows": u.rows, "bytes": u.bytes} for name, u in sorted(usage.items())},
    }
