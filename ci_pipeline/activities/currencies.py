"""Amounts in more than one currency: measures, churn and CLV add amounts up as they are written, so a table of
euros and yen sums 10 EUR and 1,600 JPY as 1,610 of something. Nothing converts them; the run says so."""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds

from ci_pipeline.config.activities import ActivityTable

#: The semantic field that names an amount's currency.
CURRENCY = "currency"


def currency_counts(facts: ds.Dataset) -> pd.DataFrame:
    """Rows per ``Activity`` and ``currency`` (``rows``) of the stored activity facts, counted in Arrow (only the
    two columns are read)."""
    table = facts.to_table(columns=["Activity", CURRENCY])
    counts = table.group_by(["Activity", CURRENCY]).aggregate([([], "count_all")]).to_pandas()
    return counts.rename(columns={"count_all": "rows"})


def currency_mix(counts: pd.DataFrame, specs: dict[str, ActivityTable]) -> dict[str, str]:
    """Per activity whose placed rows hold more than one currency: what the run warns of.

    Args:
        counts: rows per ``Activity`` and ``currency`` (``rows``), of the activities that map a currency field.
        specs: activity name -> its configuration.
    """
    counts = counts[counts["currency"].notna() & (counts["currency"].astype("string").str.strip() != "")]
    told = {}
    for name, rows in counts.groupby("Activity", sort=True):
        if len(rows) < 2:
            continue
        spec = specs[name]
        rows = rows.assign(key=rows["currency"].astype("string").str.strip()).groupby("key")["rows"].sum()
        if len(rows) < 2:
            continue
        rows = rows.sort_values(ascending=False, kind="stable")
        shares = ", ".join(f"{cur} {n / rows.sum():.1%}" for cur, n in rows.head(5).items())
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        told[name] = (
            f"activity {name} holds amounts in {len(rows)} currencies (activities.tables.{name}.fields.currency "
            f"= {spec.fields[CURRENCY]}): {shares}{more} of its rows; measures, churn and CLV add its amounts up as "
            f"written, one currency's as another's. Convert the amounts to one currency at the source (or in a SQL "
            f"view the source reads), or keep one currency's rows"
        )
    return told
