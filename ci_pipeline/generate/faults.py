"""Data-quality faults every real export has, seeded into the sample so quarantine shows end to end.

Faults are extra rows placed among the genuine ones; no genuine row is altered. So the genuine records stay whole,
``ground_truth/records.parquet`` lists exactly the customer records the pipeline accepts, and
``ground_truth/faults.parquet`` lists every injected row with where it is, what is wrong with it and which stage
quarantines it:

- ``crm/contacts.csv`` (ingestion): a repeated row (``duplicate_key``), an unparseable birth date
  (``malformed_value``), an unquoted comma in the company (``column_count``), an unclosed quote in the street
  (``broken_quoting``), an empty contact_id (``missing_key``).
- ``support/surveys.csv``: a rating that is not a number (``malformed_value``, ingestion); a survey of a ticket that
  does not exist (``unknown_customer``, activities).
- ``ecommerce/orders.parquet`` (activities): orders of accounts that do not exist (``unknown_customer``) and an
  order with a mistyped year decades ahead (``future_timestamp``; the activities stage calls a timestamp future
  when it is later than the run's wall-clock time plus a tolerance, so a date just after the as-of date would pass).

Each kind appears about once per :data:`ROWS_PER_FAULT` rows, at least once when the table has :data:`MIN_ROWS`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: One fault of each kind per this many rows of the table.
ROWS_PER_FAULT = 5000
#: Tables with fewer rows get no faults (a tiny sample stays clean).
MIN_ROWS = 20
FAULT_COLUMNS = ["source", "table", "line", "key", "kind", "stage", "detail"]
#: How far ahead the mistyped year puts an order.
FUTURE_YEARS = 40
_BAD_BIRTH_DATES = ("31/02/{year}", "unknown", "00/00/0000", "{year}-13-45")
_BAD_RATINGS = ("five", "5 stars", "good", "4-5")


def count(n_rows: int) -> int:
    """How many faults of each kind a table of ``n_rows`` genuine rows gets."""
    return 0 if n_rows < MIN_ROWS else max(1, n_rows // ROWS_PER_FAULT)


def _field(value) -> str:
    """One CSV field as pandas writes it (quoted only when it must be)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _line(values: dict) -> str:
    return ",".join(_field(v) for v in values.values())


class CsvFaults:
    """Fault lines for one CSV table, inserted into its text at chosen rows."""

    def __init__(self, source: str, table: str, frame: pd.DataFrame, key: str, rng: np.random.Generator):
        self.source, self.table, self.frame, self.key, self.rng = source, table, frame, key, rng
        self.n = len(frame)
        self.next_id = self.n
        prefix = frame[key].iloc[0].rstrip("0123456789") if self.n else ""
        self.prefix, self.width = prefix, (len(frame[key].iloc[0]) - len(prefix)) if self.n else 0
        #: (insert before genuine row position, line text, key, kind, stage, detail)
        self.pending: list[tuple[int, str, object, str, str, str]] = []

    def new_key(self) -> str:
        """A key no genuine row has (the source kept numbering)."""
        self.next_id += 1
        return self.prefix + str(self.next_id).zfill(self.width)

    def donor(self) -> tuple[int, dict]:
        """A random genuine row to copy, as a dict of column -> value."""
        i = int(self.rng.integers(0, self.n))
        return i, self.frame.iloc[i].to_dict()

    def add(self, values: dict | str, kind: str, stage: str, detail: str, after: int = 0, key=None) -> None:
        """Insert a row (a dict of values, or a raw line) somewhere after genuine row position ``after``."""
        at = int(self.rng.integers(after, self.n + 1))
        line = values if isinstance(values, str) else _line(values)
        if key is None and isinstance(values, dict):
            key = values[self.key] or None
        self.pending.append((at, line, key, kind, stage, detail))

    def render(self, header: bool = True) -> tuple[str, pd.DataFrame]:
        """The file text with the fault lines in place, and the fault records with their 1-based line numbers."""
        text = self.frame.to_csv(index=False, header=header, lineterminator="\n")
        lines = text.split("\n")[:-1]
        head, body = (lines[:1], lines[1:]) if header else ([], lines)
        order = sorted(range(len(self.pending)), key=lambda j: (self.pending[j][0], j))
        out, numbers, start = list(head), {}, 0
        for j in order:
            at = self.pending[j][0]
            out.extend(body[start:at])
            start = at
            out.append(self.pending[j][1])
            numbers[j] = len(out)
        out.extend(body[start:])
        records = pd.DataFrame(
            {
                "source": self.source,
                "table": self.table,
                "line": pd.array([numbers[j] for j in range(len(self.pending))], dtype="Int64"),
                "key": pd.array([p[2] for p in self.pending], dtype="string"),
                "kind": [p[3] for p in self.pending],
                "stage": [p[4] for p in self.pending],
                "detail": [p[5] for p in self.pending],
            },
            columns=FAULT_COLUMNS,
        )
        return "\n".join(out) + "\n", records


def crm_contacts(contacts: pd.DataFrame, rng: np.random.Generator) -> CsvFaults:
    """Duplicate, malformed birth date, extra column, unclosed quote and empty key rows among the contacts."""
    faults = CsvFaults("crm", "contacts", contacts, "contact_id", rng)
    for _ in range(count(len(contacts))):
        i, row = faults.donor()
        faults.add(row, "duplicate_key", "ingest", "the export repeated a contact's row", after=i + 1)

        _, row = faults.donor()
        year = str(int(rng.integers(1950, 2000)))
        bad = _BAD_BIRTH_DATES[int(rng.integers(0, len(_BAD_BIRTH_DATES)))].format(year=year)
        row[faults.key] = faults.new_key()
        row["birth_date"] = bad
        faults.add(row, "malformed_value", "ingest", f"birth_date '{bad}' is not a %m/%d/%Y date")

        _, row = faults.donor()
        key = faults.new_key()
        row[faults.key] = key
        company = f"{row['last_name'] or 'Smith'} Holdings, LLC".strip()
        row["company"] = "\x00"
        line = _line(row).replace("\x00", company)
        faults.add(line, "column_count", "ingest", f"unquoted comma in company '{company}'", key=key)

        _, row = faults.donor()
        key = faults.new_key()
        row[faults.key] = key
        street = str(row["street"]) if isinstance(row["street"], str) else "1 Main Street"
        row["street"] = "\x00"
        line = _line(row).replace("\x00", '"' + street.replace('"', ""))
        faults.add(line, "broken_quoting", "ingest", "the street's opening quote is never closed", key=key)

        _, row = faults.donor()
        row[faults.key] = ""
        faults.add(row, "missing_key", "ingest", "contact_id is empty")
    return faults


def support_surveys(surveys: pd.DataFrame, n_tickets: int, rng: np.random.Generator) -> CsvFaults:
    """Surveys with a rating that is not a number, and surveys of tickets that do not exist."""
    faults = CsvFaults("support", "surveys", surveys, "survey_id", rng)
    for k in range(count(len(surveys))):
        _, row = faults.donor()
        bad = _BAD_RATINGS[int(rng.integers(0, len(_BAD_RATINGS)))]
        row[faults.key] = faults.new_key()
        row["rating"] = bad
        faults.add(row, "malformed_value", "ingest", f"rating '{bad}' is not a number")

        _, row = faults.donor()
        row[faults.key] = faults.new_key()
        row["ticket_id"] = "T" + str(n_tickets + 101 + 37 * k).zfill(7)
        faults.add(row, "unknown_customer", "activities", f"ticket {row['ticket_id']} does not exist")
    return faults


def ecommerce_orders(
    orders: pd.DataFrame, n_customers: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Orders of accounts that do not exist and orders dated decades ahead, appended after the genuine orders.

    Returns:
        (orders with the faulty rows, fault records)
    """
    n = count(len(orders))
    if n == 0:
        return orders, pd.DataFrame(columns=FAULT_COLUMNS).astype({"line": "Int64", "key": "string"})
    donors = orders.iloc[rng.integers(0, len(orders), 2 * n)].reset_index(drop=True)
    width = len(orders["order_id"].iloc[0]) - 2
    donors["order_id"] = ["SO" + str(len(orders) + 1 + j).zfill(width) for j in range(2 * n)]
    orphan = np.arange(n)
    missing = ["EC" + str(n_customers + 101 + 53 * j).zfill(8) for j in range(n)]
    donors.loc[orphan, "customer_id"] = missing
    future = np.arange(n, 2 * n)
    donors.loc[future, "order_date"] = donors.loc[future, "order_date"] + pd.DateOffset(years=FUTURE_YEARS)
    donors.loc[future, "status"] = "processing"
    records = pd.DataFrame(
        {
            "source": "ecommerce",
            "table": "orders",
            "line": pd.array([pd.NA] * (2 * n), dtype="Int64"),
            "key": pd.array(donors["order_id"], dtype="string"),
            "kind": ["unknown_customer"] * n + ["future_timestamp"] * n,
            "stage": "activities",
            "detail": [f"account {c} does not exist" for c in missing]
            + [f"order_date {d:%Y-%m-%dT%H:%M:%S}: year mistyped" for d in donors.loc[future, "order_date"]],
        },
        columns=FAULT_COLUMNS,
    )
    return pd.concat([orders, donors], ignore_index=True), records
