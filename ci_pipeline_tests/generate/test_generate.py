"""The sample data generator: contract of every table, determinism, noise, ground truth and the CLI."""

from __future__ import annotations

import filecmp
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from rapidfuzz.distance import OSA

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.generate import assemble_config, generate
from ci_pipeline.generate.noise import phone_text, typo
from ci_pipeline.generate.tables import Identity, unique_addresses

ROOT = Path(__file__).resolve().parents[2]
PEOPLE = 200

#: The sample contract: every table's columns in file order.
COLUMNS = {
    ("crm", "contacts"): [
        "contact_id", "first_name", "last_name", "email", "phone", "street", "city", "state", "postal_code",
        "country", "birth_date", "gender", "company", "created_at", "modified_at",
    ],
    ("ecommerce", "customers"): [
        "customer_id", "full_name", "email", "phone", "address_line1", "city", "state", "zip", "country",
        "signup_date", "last_login",
    ],
    ("ecommerce", "orders"): [
        "order_id", "customer_id", "order_date", "total_amount", "currency", "channel", "status", "is_return",
    ],
    ("ecommerce", "order_lines"): [
        "line_id", "order_id", "customer_id", "product_id", "product_name", "brand", "category", "quantity",
        "unit_price", "line_amount", "order_date",
    ],
    ("ecommerce", "web_sessions"): [
        "session_id", "customer_id", "started_at", "page_views", "duration_seconds", "landing_url", "device",
    ],
    ("loyalty", "members"): [
        "member_id", "first_name", "last_name", "email", "phone", "postal_code", "birth_date", "tier", "joined_on",
    ],
    ("loyalty", "points"): ["transaction_id", "member_id", "transaction_date", "points", "reason"],
    ("support", "tickets"): [
        "ticket_id", "requester_name", "requester_email", "requester_phone", "opened_at", "channel", "subject",
        "description", "priority", "status",
    ],
    ("support", "surveys"): ["survey_id", "ticket_id", "submitted_at", "rating", "comment"],
}  # fmt: skip
CUSTOMER_TABLES = {
    ("crm", "contacts"): "contact_id",
    ("ecommerce", "customers"): "customer_id",
    ("loyalty", "members"): "member_id",
    ("support", "tickets"): "ticket_id",
}
AS_OF = pd.Timestamp("2026-06-30 23:59:59")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generate(people=PEOPLE, seed=11, out=out)
    return out


def faults_of(out: Path, source: str, table: str) -> pd.DataFrame:
    """The faulty rows the generator injected into one table (ground_truth/faults.parquet)."""
    faults = pd.read_parquet(out / "ground_truth" / "faults.parquet")
    return faults[(faults["source"] == source) & (faults["table"] == table)]


def read_csv_text(path: Path, skip_lines: set[int] = frozenset(), **kwargs) -> pd.DataFrame:
    """A CSV file as strings, without the given 1-based physical lines (the faulty rows)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    kept = "\n".join(line for number, line in enumerate(lines, start=1) if number not in skip_lines)
    return pd.read_csv(io.StringIO(kept), dtype=str, keep_default_na=False, na_values=[""], **kwargs)


def read_table(out: Path, source: str, table: str, genuine: bool = True) -> pd.DataFrame:
    """Read a generated table the way its format says (CDM partitions through model.json).

    With ``genuine`` the injected faulty rows are left out (by line for CSV files, by key for Parquet).
    """
    faults = faults_of(out, source, table) if genuine else faults_of(out, "", "")
    if source == "crm":
        return read_csv_text(out / "crm" / "contacts.csv", set(faults["line"].dropna()))
    if source == "support":
        return read_csv_text(out / "support" / f"{table}.csv", set(faults["line"].dropna()))
    if source == "ecommerce":
        frame = pd.read_parquet(out / "ecommerce" / f"{table}.parquet")
        return frame[~frame[COLUMNS[(source, table)][0]].isin(faults["key"].dropna())].reset_index(drop=True)
    model = json.loads((out / "loyalty" / "model.json").read_text())
    entity = next(e for e in model["entities"] if e["name"].lower() == table)
    names = [a["name"] for a in entity["attributes"]]
    parts = [
        pd.read_csv(out / "loyalty" / p["location"], header=None, names=names, dtype=str, keep_default_na=False,
                    na_values=[""])
        for p in entity["partitions"]
    ]  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def test_every_table_has_the_contract_columns_and_sorted_unique_keys(sample):
    for (source, table), columns in COLUMNS.items():
        frame = read_table(sample, source, table)
        assert list(frame.columns) == columns, (source, table)
        assert len(frame) > 0, (source, table)
        key = frame[columns[0]]
        assert key.is_unique and key.notna().all(), (source, table)
        assert key.is_monotonic_increasing, (source, table)


def test_typed_parquet_columns(sample):
    orders = read_table(sample, "ecommerce", "orders")
    assert str(orders["order_date"].dtype).startswith("datetime64")
    assert orders["total_amount"].dtype == "float64" and orders["is_return"].dtype == bool
    lines = pd.read_parquet(sample / "ecommerce" / "order_lines.parquet")
    assert lines["quantity"].dtype == "int64" and lines["line_amount"].dtype == "float64"
    assert pd.api.types.is_string_dtype(lines["order_date"])
    # Order totals are the sum of their lines.
    by_order = lines.groupby("order_id")["line_amount"].sum().round(2)
    assert np.allclose(orders.set_index("order_id")["total_amount"].loc[by_order.index], by_order)


def test_foreign_keys_resolve(sample):
    customers = set(pd.read_parquet(sample / "ecommerce" / "customers.parquet")["customer_id"])
    for table in ("orders", "order_lines", "web_sessions"):
        assert set(read_table(sample, "ecommerce", table)["customer_id"]) <= customers
    members = set(read_table(sample, "loyalty", "members")["member_id"])
    assert set(read_table(sample, "loyalty", "points")["member_id"]) <= members
    tickets = set(read_table(sample, "support", "tickets")["ticket_id"])
    assert set(read_table(sample, "support", "surveys")["ticket_id"]) <= tickets


def test_all_activity_ends_by_the_as_of_date(sample):
    orders = read_table(sample, "ecommerce", "orders")
    assert orders["order_date"].max() <= AS_OF
    checks = [
        (read_table(sample, "ecommerce", "web_sessions")["started_at"], "%Y-%m-%dT%H:%M:%S"),
        (read_table(sample, "loyalty", "points")["transaction_date"], "%Y-%m-%dT%H:%M:%S"),
        (read_table(sample, "support", "tickets")["opened_at"], "%Y-%m-%d %H:%M:%S"),
        (read_table(sample, "support", "surveys")["submitted_at"], "%Y-%m-%d %H:%M:%S"),
        (read_table(sample, "crm", "contacts")["modified_at"], "%m/%d/%Y %H:%M:%S"),
    ]
    for values, fmt in checks:
        assert pd.to_datetime(values, format=fmt).max() <= AS_OF


def test_written_config_validates_and_matches_the_files(sample):
    config = load_config(sample / "ci_pipeline.yaml")
    assert set(config.sources) == {"crm", "ecommerce", "loyalty", "support"}
    declared = {(s, t) for s, src in config.sources.items() for t in src.tables}
    assert declared == set(COLUMNS)
    for source, src in config.sources.items():
        for table, spec in src.tables.items():
            assert (sample / spec.path).exists(), spec.path
            assert spec.primary_key == COLUMNS[(source, table)][0]
            assert set(spec.columns) <= set(COLUMNS[(source, table)])
    assert "ground_truth" not in (sample / "ci_pipeline.yaml").read_text()


def test_cdm_model_json_is_a_v1_folder_with_relative_partitions(sample):
    model = json.loads((sample / "loyalty" / "model.json").read_text())
    assert model["version"] == "1.0"
    for entity in model["entities"]:
        assert entity["$type"] == "LocalEntity"
        assert len(entity["partitions"]) >= 2
        types = {a["name"]: a["dataType"] for a in entity["attributes"]}
        for part in entity["partitions"]:
            assert not part["location"].startswith(("/", "http"))
            assert part["fileFormatSettings"]["columnHeaders"] is False
            first_line = (sample / "loyalty" / part["location"]).read_text().splitlines()[0]
            assert not first_line.startswith(entity["attributes"][0]["name"])
    assert types["points"] == "int64" and types["transaction_date"] == "dateTime"


def test_ground_truth_covers_every_customer_record_exactly_once(sample):
    records = pd.read_parquet(sample / "ground_truth" / "records.parquet")
    assert list(records.columns) == ["source", "table", "key", "person_id"]
    assert not records.duplicated(["source", "table", "key"]).any()
    for (source, table), key in CUSTOMER_TABLES.items():
        keys = set(read_table(sample, source, table)[key])
        truth = set(records.loc[(records["source"] == source) & (records["table"] == table), "key"])
        assert keys == truth, (source, table)
    people = pd.read_parquet(sample / "ground_truth" / "people.parquet")
    assert len(people) == PEOPLE and people["person_id"].is_unique
    assert set(records["person_id"]) == set(people["person_id"])
    assert {"churned", "churn_date", "segment", "favourite_category", "lookalike_of"} <= set(people.columns)
    assert people.loc[people["churned"], "churn_date"].notna().all()
    assert people.loc[~people["churned"], "churn_date"].isna().all()


def test_people_appear_in_one_to_three_sources_and_some_twice_in_one(sample):
    records = pd.read_parquet(sample / "ground_truth" / "records.parquet")
    sources = records.groupby("person_id")["source"].nunique()
    assert sources.between(1, 3).all()
    assert set(sources) == {1, 2, 3}
    twice = records.groupby(["source", "person_id"]).size()
    for source in ("crm", "support"):
        assert (twice.loc[source] > 1).any(), source


def test_noise_is_present(sample):
    contacts = read_table(sample, "crm", "contacts")
    records = pd.read_parquet(sample / "ground_truth" / "records.parquet")
    people = pd.read_parquet(sample / "ground_truth" / "people.parquet").set_index("person_id")
    crm = records[records["source"] == "crm"].set_index("key")["person_id"]
    true_first = people.loc[crm.loc[contacts["contact_id"]], "first_name"].to_numpy()
    written = contacts["first_name"].to_numpy()
    differs = written != true_first
    assert differs.any(), "some first names must differ from the true name (nickname, typo, case)"
    assert contacts["email"].isna().any() and contacts["birth_date"].isna().any()
    phones = pd.concat([contacts["phone"], read_table(sample, "support", "tickets")["requester_phone"]]).dropna()
    assert phones.str.match(r"^\(\d{3}\) \d{3}-\d{4}$").any() and phones.str.match(r"^\d{10}$").any()
    streets = contacts["street"].dropna()
    assert streets.str.contains(r" St\.?(?: |$)").any() and streets.str.contains(" Street").any()
    members = read_table(sample, "loyalty", "members")
    assert (members["last_name"].str.isupper()).any() and (~members["last_name"].str.isupper()).any()
    # Look-alikes and households exist in the truth.
    assert people["lookalike_of"].notna().any()
    assert people["household_id"].duplicated().any()


def test_churned_people_stop_buying_and_rate_lower(tmp_path):
    out = tmp_path / "big"
    generate(people=1500, seed=3, out=out)
    people = pd.read_parquet(out / "ground_truth" / "people.parquet").set_index("person_id")
    records = pd.read_parquet(out / "ground_truth" / "records.parquet")
    account = records[records["table"] == "customers"].set_index("key")["person_id"]
    orders = read_table(out, "ecommerce", "orders")
    orders["person_id"] = account.loc[orders["customer_id"]].to_numpy()
    last = orders.groupby("person_id")["order_date"].max()
    churned = people.loc[last.index, "churned"].to_numpy()
    churn_date = pd.to_datetime(people.loc[last.index, "churn_date"]).to_numpy()
    assert (last.to_numpy()[churned] < churn_date[churned] + np.timedelta64(1, "D")).all()
    tickets = records[records["table"] == "tickets"].set_index("key")["person_id"]
    surveys = read_table(out, "support", "surveys")
    rated = people.loc[tickets.loc[surveys["ticket_id"]], "churned"].to_numpy()
    rating = surveys["rating"].astype(int).to_numpy()
    assert rating[rated].mean() < rating[~rated].mean() - 0.8


def test_nickname_phone_and_typo_helpers():
    rng = np.random.default_rng(0)
    styles = phone_text(np.array([5550101234] * 7), np.arange(7)).tolist()
    assert styles[:2] == ["+1 (555) 010-1234", "5550101234"]
    assert len(set(styles)) == 7
    changed = typo(pd.Series(["Robert"] * 50, dtype="str"), rng, 1.0)
    assert (changed != "Robert").all() and changed.str[0].eq("R").all()


def test_a_misspelt_email_domain_is_a_typing_error_in_its_own_domain():
    addresses = pd.Series(["ann.lee@gmail.com", "bo@evans.example", "cy@yahoo.com", None] * 50, dtype="str")
    holder = SimpleNamespace(email=addresses, n=len(addresses), rng=np.random.default_rng(3))
    out = Identity.email_text(holder, 0.0, 1.0)
    assert out.isna().equals(addresses.isna())
    before, after = addresses.dropna().str.split("@"), out.dropna().str.split("@")
    assert (before.str[0] == after.str[0]).all()  # the local part is kept
    distance = [OSA.distance(a, b) for a, b in zip(before.str[1], after.str[1], strict=True)]
    # One swapped, dropped, doubled or wrong letter (swapping "oo" changes nothing), never another provider's
    # domain (gmail.com -> icloud.co).
    assert set(distance) <= {0, 1} and np.mean(np.array(distance) == 1) > 0.8
    holder.rng = np.random.default_rng(3)
    assert Identity.email_text(holder, 0.0, 0.0).equals(addresses)


def test_same_seed_same_files_other_seed_differs(sample, tmp_path):
    again = tmp_path / "again"
    generate(people=PEOPLE, seed=11, out=again)
    files = sorted(p.relative_to(sample) for p in sample.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(sample / rel), pd.read_parquet(again / rel))
        else:
            assert filecmp.cmp(sample / rel, again / rel, shallow=False), rel
    other = tmp_path / "other"
    generate(people=PEOPLE, seed=12, out=other)
    assert not filecmp.cmp(sample / "crm" / "contacts.csv", other / "crm" / "contacts.csv", shallow=False)


def test_bundled_sample_config_is_what_the_templates_produce():
    committed = (ROOT / "data" / "sample" / "ci_pipeline.yaml").read_text(encoding="utf-8")
    assert committed == assemble_config(), "run `ci-pipeline generate --config-only --out data/sample`"
    load_config(ROOT / "data" / "sample" / "ci_pipeline.yaml")


def _committed_sample_file(sample, path) -> bool:
    # A run of the sample writes its lake and the embedded sink next to the data (both git-ignored).
    return path.is_file() and "lake" not in path.relative_to(sample).parts and not path.name.startswith("sink.sqlite")


def test_bundled_sample_files_stay_small():
    sample = ROOT / "data" / "sample"
    for file in sample.rglob("*"):
        if _committed_sample_file(sample, file):
            assert file.stat().st_size < 1_000_000, file


def test_cli_generate_and_config_only(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["generate", "--people", "20", "--seed", "1", "--out", str(out)]) == 0
    assert "crm.contacts" in capsys.readouterr().out
    (out / "ci_pipeline.yaml").write_text("stale")
    before = (out / "crm" / "contacts.csv").read_bytes()
    assert main(["generate", "--config-only", "--out", str(out)]) == 0
    assert (out / "ci_pipeline.yaml").read_text() == assemble_config()
    assert (out / "crm" / "contacts.csv").read_bytes() == before


@pytest.mark.parametrize("people", ["0", "-5", "many"])
def test_cli_rejects_bad_people(tmp_path, capsys, people):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--people", people, "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--people" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_unwritable_out_and_bad_date(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["generate", "--people", "5", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"--out .*a-file/sub: cannot write there", err) and "Traceback" not in err
    assert main(["generate", "--people", "5", "--out", str(tmp_path / "d"), "--as-of", "30/06/2026"]) == 2
    assert "--as-of" in capsys.readouterr().err


def test_bench_generate_prints_one_json_line(capsys):
    assert main(["bench", "generate", "--people", "30"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["people"] == 30 and figures["seconds"] > 0 and figures["peak_rss_mb"] > 0
    assert figures["rows"]["ecommerce.customers"] > 0


@pytest.mark.slow
def test_bundled_sample_is_what_the_generator_writes_now(tmp_path):
    """data/sample must be regenerated with `ci-pipeline generate --people 2000 --seed 7 --out data/sample`."""
    sample = ROOT / "data" / "sample"
    fresh = tmp_path / "sample"
    generate(people=2000, seed=7, out=fresh)
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(sample) for p in sample.rglob("*") if _committed_sample_file(sample, p))
    assert files == committed
    for rel in files:
        if rel.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(fresh / rel), pd.read_parquet(sample / rel))
        else:
            assert filecmp.cmp(fresh / rel, sample / rel, shallow=False), rel


def test_as_of_moves_the_end_of_all_activity(tmp_path):
    out = tmp_path / "early"
    generate(people=150, seed=5, out=out, as_of="2024-12-31")
    assert read_table(out, "ecommerce", "orders")["order_date"].max() <= pd.Timestamp("2025-01-01")
    points = read_table(out, "loyalty", "points")["transaction_date"]
    assert pd.to_datetime(points, format="%Y-%m-%dT%H:%M:%S").max() < pd.Timestamp("2025-01-01")
    people = pd.read_parquet(out / "ground_truth" / "people.parquet")
    assert people["churn_date"].dropna().max() <= pd.Timestamp("2024-12-31").date()


@pytest.mark.parametrize("people", [1, 3])
def test_tiny_populations_still_write_every_file(tmp_path, people):
    counts = generate(people=people, seed=1, out=tmp_path)
    assert set(counts) == {f"{s}.{t}" for s, t in COLUMNS}
    load_config(tmp_path / "ci_pipeline.yaml")
    for (source, table), columns in COLUMNS.items():
        assert list(read_table(tmp_path, source, table).columns) == columns


def test_email_addresses_are_given_out_once():
    local = pd.Series(["ann.lee", "ann.lee", "ann.lee1", "bob", "ann.lee"], dtype="string")
    domain = pd.Series(["mail.com"] * 4 + ["other.com"], dtype="string")
    got = unique_addresses(local, domain)
    assert got.is_unique
    assert got.tolist()[:2] == ["ann.lee@mail.com", "ann.lee1@mail.com"]
    assert got.tolist()[3:] == ["bob@mail.com", "ann.lee@other.com"]
