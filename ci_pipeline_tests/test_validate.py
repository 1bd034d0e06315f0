"""`ci-pipeline validate` finds in one pass what a run would fail on; `run` refuses to start on the same problems."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.errors import ConfigError
from ci_pipeline.validation import project_problems

CONFIG = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts:
        format: csv
        path: contacts.csv
        primary_key: contact_id
        columns: {signup: date, loyalty_tier: string}
  shop:
    owner: web-team
    tables:
      orders:
        format: csv
        path: orders.csv
        primary_key: order_id
        columns: {amount: double, ts: datetime}
      visits:
        format: csv
        path: visits.csv
        primary_key: visit_id
      lines:
        format: parquet
        path: lines.parquet
        primary_key: line_id
        columns: {qty: int64}
unify:
  tables:
    - source: crm
      table: contacts
      columns: {first_name: first_name, emial: email, city: city}
      recency_column: signup
activities:
  tables:
    orders:
      source: shop
      table: orders
      type: SalesOrder
      timestamp: ts
      fields: {amount: amount, currency: curency}
      customer: {source: crm, table: contacts, column: contact_id}
segments:
  definitions:
    locals:
      rules:
        - {field: profile.NoSuchAttr, op: '=', value: Seattle}
        - {field: profile.Cty, op: '=', value: Seattle, combine: union}
"""


def write_project(tmp_path, config: str = CONFIG):
    (tmp_path / "contacts.csv").write_text(
        "contact_id,first_name,email,city,signup\nc1,Ann,ann@x.org,Oslo,2020-01-01\n"
    )
    # line 3 holds a byte that is not UTF-8
    (tmp_path / "orders.csv").write_bytes(
        b"order_id,contact_id,amount,ts\no1,c1,10.5,2024-01-01\no2,c1,\xff,2024-01-02\n"
    )
    (tmp_path / "visits.csv").write_text("visit_id,contact_id\n")
    pd.DataFrame({"line_id": ["l1"], "quantity": [2]}).to_parquet(tmp_path / "lines.parquet")
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(config)
    return path


def test_validate_lists_every_problem_of_the_sources_at_once_with_lines_and_suggestions(tmp_path, capsys):
    path = write_project(tmp_path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    expected = [
        # a declared column the file no longer has
        "line 10: sources.crm.tables.contacts.columns.loyalty_tier: declared, but",
        # a declared column one edit away from the real one
        "sources.shop.tables.lines.columns.qty: declared, but",
        # bad bytes after line 1
        "sources.shop.tables.orders.csv.encoding:",
        "orders.csv: line 3: byte 0xff is not valid utf-8",
        # a header-only file
        "sources.shop.tables.visits.path:",
        "visits.csv holds only its header, no rows",
        # a mapped column that is not in the file, with the near miss
        "unify.tables[0].columns.emial: crm.contacts has no column 'emial'",
        "has no column 'emial' (did you mean 'email'?)",
        # an activity field on a missing column
        "activities.tables.orders.fields.currency: shop.orders has no column 'curency'",
        # profile attributes the unified profile does not have
        "segments.definitions.locals.rules[0].field: unknown profile attribute 'NoSuchAttr'",
        "segments.definitions.locals.rules[1].field: unknown profile attribute 'Cty' (did you mean profile.City?)",
    ]
    for text in expected:
        assert text in err, text
    assert "8 problem(s)" in err


def test_validate_reads_only_a_bounded_sample_of_large_files(tmp_path):
    path = write_project(tmp_path, CONFIG.split("unify:")[0])
    # A bad byte far past the sample is not looked for (ingest still quarantines or refuses it at run time).
    with open(tmp_path / "orders.csv", "wb") as handle:
        handle.write(b"order_id,contact_id,amount,ts\n")
        handle.write(b"o1,c1,10.5,2024-01-01\n" * 200_000)
        handle.write(b"o2,c1,\xff,2024-01-02\n")
    problems = project_problems(load_config(path))
    assert not any("orders" in p for p in problems), problems


def test_run_refuses_to_start_and_writes_nothing(tmp_path, capsys):
    path = write_project(tmp_path)
    assert main(["--config", str(path), "run"]) == 2
    err = capsys.readouterr().err
    assert "unify.tables[0].columns.emial" in err and "orders.csv: line 3" in err
    assert not (tmp_path / "lake").exists()
    assert not (tmp_path / "sink.sqlite").exists()


def test_run_of_a_selection_checks_the_tables_it_reads(tmp_path, capsys):
    good = CONFIG.split("unify:")[0].replace("columns: {signup: date, loyalty_tier: string}", "columns: {signup: date}")
    path = write_project(tmp_path, good)
    # contacts is sound: a run of it alone goes ahead although other tables of the project are broken
    assert main(["--config", str(path), "run", "--select", "crm/contacts"]) == 0
    assert (tmp_path / "lake").exists()
    capsys.readouterr()
    assert main(["--config", str(path), "run", "--select", "shop/visits"]) == 2
    assert "visits.csv holds only its header" in capsys.readouterr().err
    assert not (tmp_path / "sink.sqlite").exists() or not _sink_rows(tmp_path / "sink.sqlite")


def _sink_rows(path) -> int:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        return sum(db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables)


def test_header_only_file_is_fine_when_the_table_may_be_empty(tmp_path):
    path = write_project(tmp_path, CONFIG.split("unify:")[0])
    text = path.read_text().replace("path: visits.csv\n", "path: visits.csv\n        allow_empty: true\n")
    path.write_text(text)
    assert not any("visits" in p for p in project_problems(load_config(path)))


def test_bare_cr_csv_header_is_read(tmp_path):
    path = write_project(tmp_path, CONFIG.split("unify:")[0])
    (tmp_path / "contacts.csv").write_bytes(b"contact_id,first_name,signup\rc1,Ann,2020-01-01\r")
    problems = project_problems(load_config(path))
    contacts = [p for p in problems if "crm.tables.contacts" in p]
    # only the declared column that is really missing, not a traceback or a garbled header
    assert len(contacts) == 1 and "columns.loyalty_tier" in contacts[0], contacts


def test_config_problems_and_source_problems_are_reported_together(tmp_path):
    path = write_project(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # load_config alone stops at the configuration's own references ...
    assert all("sources." not in p for p in caught.value.problems)
    # ... validate adds the sources' problems in the same list (see the first test)


def test_cdm_delta_and_incremental_tables_are_checked_from_their_schemas(tmp_path):
    import json

    from deltalake import write_deltalake

    (tmp_path / "cdm" / "Members").mkdir(parents=True)
    entity = {
        "$type": "LocalEntity",
        "name": "Members",
        "attributes": [{"name": "member_id", "dataType": "string"}, {"name": "points", "dataType": "int64"}],
        "partitions": [{"name": "p0", "location": "Members/p0.csv"}],
    }
    (tmp_path / "cdm" / "model.json").write_text(json.dumps({"name": "loyalty", "entities": [entity]}))
    (tmp_path / "cdm" / "Members" / "p0.csv").write_bytes(b"m1,10\nm2,\xe9\n")
    write_deltalake(str(tmp_path / "events"), pd.DataFrame({"event_id": [1], "kind": ["a"]}))
    (tmp_path / "inc" / "FullData").mkdir(parents=True)
    (tmp_path / "inc" / "FullData" / "part.csv").write_text("key,value\nk1,1\n")
    config = """
sources:
  src:
    owner: data@contoso.example
    tables:
      members: {format: cdm, path: cdm/model.json, entity: Members, primary_key: member_id, columns: {pionts: int64}}
      events: {format: delta, path: events, primary_key: event_id, columns: {knd: string}}
      inc: {format: csv, path: inc, primary_key: id, incremental: {}}
"""
    (tmp_path / "c.yaml").write_text(config)
    problems = project_problems(load_config(tmp_path / "c.yaml"))
    assert len(problems) == 4, problems
    bad_byte, members, events, inc = problems
    assert members.startswith("sources.src.tables.members.columns.pionts: declared, but")
    assert "(did you mean 'points'?)" in members
    assert bad_byte.startswith("sources.src.tables.members.csv.encoding:") and "p0.csv: line 2: byte 0xe9" in bad_byte
    assert events.startswith("sources.src.tables.events.columns.knd:") and "(did you mean 'kind'?)" in events
    assert inc.startswith("sources.src.tables.inc.primary_key: column 'id' is not in inc (columns: key, value)")


REFERENCES = """sources:
  crm:
    owner: sales-ops
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: contact_id}
      orders: {format: csv, path: orders.csv, primary_key: order_id}
unify:
  tables:
    - {source: crm, table: contacts, columns: {email: email}}
    - {source: crm, table: contactz, columns: {email: email}}
  match:
    rules:
      - {name: r, conditions: [{field: phone}]}
activities:
  tables:
    orders:
      source: crm
      table: ordrs
      type: SalesOrder
      timestamp: ts
      customer: {source: crm, table: contacts, column: contact_id}
measures:
  attributes:
    spend: {activity: order, aggregate: sum, field: amount}
    ratio: {expression: spend / cnt}
segments:
  definitions:
    big:
      rules:
        - {field: measure.spnd, op: '>', value: 1}
        - {segment: bigg}
        - {activity: visits}
"""


def test_eight_broken_references_are_all_reported_with_suggestions(tmp_path, capsys):
    (tmp_path / "contacts.csv").write_text("contact_id,email\nc1,a@x.org\n")
    (tmp_path / "orders.csv").write_text("order_id,ts\no1,2024-01-01\n")
    (tmp_path / "c.yaml").write_text(REFERENCES)
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "8 problem(s)" in err
    for text in (
        "line 10: unify.tables[1].table: source 'crm' has no table 'contactz' (did you mean 'contacts'?)",
        "line 13: unify.match.rules[0].conditions[0].field: 'phone' is not mapped",
        "line 16: activities.tables.orders: no table 'ordrs' in source 'crm' (did you mean 'orders'?)",
        "line 24: measures.attributes.spend.activity[0]: unknown activity 'order' (did you mean 'orders'?)",
        "line 25: measures.attributes.ratio.expression: unknown measure 'cnt'",
        "line 30: segments.definitions.big.rules[0].field: unknown measure 'spnd' (did you mean 'spend'?)",
        "line 31: segments.definitions.big.rules[1].segment: unknown segment 'bigg' (did you mean 'big'?)",
        "line 32: segments.definitions.big.rules[2].activity: unknown activity 'visits'",
    ):
        assert text in err, text


def test_a_file_without_line_breaks_in_the_sample_is_named(tmp_path):
    path = write_project(tmp_path, CONFIG.split("unify:")[0])
    (tmp_path / "contacts.csv").write_bytes(b"contact_id" + b"x" * (2 << 20))
    problems = project_problems(load_config(path))
    assert any(
        p.startswith("sources.crm.tables.contacts.path:") and "no line break in the first 1 MiB" in p for p in problems
    ), problems


def test_a_missing_cdm_partition_is_a_problem_not_a_traceback(tmp_path):
    import json

    (tmp_path / "cdm").mkdir()
    entity = {
        "$type": "LocalEntity",
        "name": "Members",
        "attributes": [{"name": "member_id", "dataType": "string"}],
        "partitions": [{"name": "p0", "location": "Members/gone.csv"}],
    }
    (tmp_path / "cdm" / "model.json").write_text(json.dumps({"name": "loyalty", "entities": [entity]}))
    (tmp_path / "c.yaml").write_text(
        "sources:\n  src:\n    owner: data@contoso.example\n    tables:\n"
        "      members: {format: cdm, path: cdm/model.json, entity: Members, primary_key: member_id}\n"
    )
    problems = project_problems(load_config(tmp_path / "c.yaml"))
    assert len(problems) == 1 and problems[0].startswith("sources.src.tables.members.path:"), problems
    assert "gone.csv" in problems[0]


def test_alias_files_and_sink_secrets_are_checked_without_showing_a_secret(tmp_path, monkeypatch, capsys):
    (tmp_path / "contacts.csv").write_text("contact_id,first_name\nc1,Ann\n")
    (tmp_path / "nicknames.csv").write_text("nick,full\nbob,robert\n")
    (tmp_path / "key.txt").write_text("PfxPassw0rdValue\n")
    config = """sources:
  crm:
    owner: sales-ops
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: contact_id}
unify:
  tables:
    - {source: crm, table: contacts, columns: {first_name: first_name}}
  normalize:
    aliases: {nicknames: nicknames.csv, companies: companies.csv}
publish:
  sink:
    kind: dataverse
    dataverse:
      url: https://contoso.crm.dynamics.com
      credential: certificate
      tenant_id: t
      client_id: c
      certificate_path: certs/app.pfx
      certificate_password: file:key.txt
      client_secret: env:CI_TEST_UNSET_SECRET
"""
    (tmp_path / "c.yaml").write_text(config)
    monkeypatch.delenv("CI_TEST_UNSET_SECRET", raising=False)
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" in err
    assert "line 10: unify.normalize.aliases.nicknames:" in err and "header 'alias,canonical'" in err
    assert "line 10: unify.normalize.aliases.companies: cannot read" in err
    unset = "environment variable CI_TEST_UNSET_SECRET is not set"
    assert f"line 21: publish.sink.dataverse.client_secret: {unset}" in err
    assert "line 19: publish.sink.dataverse.certificate_path:" in err and "app.pfx does not exist" in err
    assert "PfxPassw0rdValue" not in err
    # a run that publishes nothing does not need the sink's secrets or the alias files
    assert main(["--config", str(tmp_path / "c.yaml"), "run", "--select", "crm/contacts"]) == 0
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "c.yaml"), "run", "--select", "crm/contacts+"]) == 2
    err = capsys.readouterr().err
    assert "unify.normalize.aliases.companies" in err and "CI_TEST_UNSET_SECRET" not in err
    assert main(["--config", str(tmp_path / "c.yaml"), "run"]) == 2
    assert "4 problem(s)" in capsys.readouterr().err


SANCTIONS = """
sources:
  un:
    owner: compliance
    tables:
      sanctions:
        format: csv
        path: sanctions.csv
        primary_key: id
"""


def write_sanctions(tmp_path, text: str, config: str = SANCTIONS):
    (tmp_path / "sanctions.csv").write_text(text)
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(config)
    return path


def listed_people(count: int = 10) -> list[str]:
    """Records of a sanctions list; every third holds an address over two lines, in quotes."""
    return [
        f'{i},Person {i},"{i} Main St\nApt {i}"' if i % 3 == 0 else f'{i},Person {i},"{i} Elm Rd, Oslo"'
        for i in range(count)
    ]


def test_validate_tells_a_table_read_line_by_line_that_its_quoted_values_span_lines(tmp_path, capsys):
    path = write_sanctions(tmp_path, "\n".join(["id,name,address", *listed_people()]) + "\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    # 4 of the 10 records span two lines: 8 lines of 15 hold an unclosed quote when read one by one.
    assert (
        "line 6: sources.un.tables.sanctions.csv.multiline: 8 of the 15 lines of "
        f"{tmp_path / 'sanctions.csv'} (lines 2, 3, 6, 7, 10, ...) hold a quoted value with a line break: 4 of the "
        "10 records read have values over several lines"
    ) in err
    assert err.rstrip().endswith("set sources.un.tables.sanctions.csv.multiline: true")
    # A run refuses, as on a date format that most values are not in, rather than quarantine 40% of the table.
    assert main(["--config", str(path), "run"]) == 2
    assert not (tmp_path / "lake").exists()


def test_a_few_values_over_lines_are_a_warning_and_a_run_quarantines_only_them(tmp_path, capsys):
    people = [f"{i},Person {i},{i} Elm Rd" for i in range(60)]
    people[7] = '7,Person 7,"7 Elm Rd\nback door"'  # one note typed over two lines among 60 records
    path = write_sanctions(tmp_path, "\n".join(["id,name,address", *people]) + "\n")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: line 6: sources.un.tables.sanctions.csv.multiline: 2 of the 62 lines of ")
    assert "set sources.un.tables.sanctions.csv.multiline: true" in err
    assert out.endswith(": OK (1 sources, 1 tables; 1 warning(s) above)\n")
    # The run is not stopped: it loads the 59 others and quarantines the two lines, saying why.
    assert main(["--config", str(path), "run"]) == 0
    tables = tmp_path / "lake" / "ci_pipeline" / "un"
    assert len(pd.read_parquet(tables / "sanctions.parquet")) == 59
    assert len(pd.read_parquet(tables / "sanctions_corrupt.parquet")) == 2


def test_validate_says_nothing_of_values_over_lines_when_the_table_reads_them(tmp_path, capsys):
    config = SANCTIONS.replace("primary_key: id\n", "primary_key: id\n        csv: {multiline: true}\n")
    path = write_sanctions(tmp_path, "\n".join(["id,name,address", *listed_people()]) + "\n", config)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.endswith(": OK (1 sources, 1 tables)\n")


def test_a_stray_quote_is_a_warning_to_fix_the_file_not_to_set_multiline(tmp_path, capsys):
    people = [f"{i},Person {i},{i} Elm Rd" for i in range(20)]
    for i in (4, 12):
        people[i] = people[i].replace(",", ',"', 1)  # 4,"Person 4,4 Elm Rd: the name's quote is never closed
    path = write_sanctions(tmp_path, "\n".join(["id,name,address", *people]) + "\n")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(
        "warning: line 8: sources.un.tables.sanctions.path: 2 of the 21 lines of "
        f"{tmp_path / 'sanctions.csv'} (lines 6, 14) hold an unclosed quote that does not close as a value over "
        "several lines (a stray quote): a run quarantines these lines"
    )
    assert "fix the quotes in the file" in err and "set sources" not in err
    assert out.endswith(": OK (1 sources, 1 tables; 1 warning(s) above)\n")


def test_a_value_over_lines_cut_by_the_end_of_the_sample_is_not_taken_for_a_stray_quote(tmp_path):
    from ci_pipeline.ingest.preflight import SAMPLE_BYTES

    record = '{:07d},"Flat 1\nHigh St"\n'  # 25 bytes; the value's line break is its 16th
    # A header as long as puts the sample's end after that line break and before the closing quote.
    header = next(h for h in (f"id{'_' * k},address\n" for k in range(25)) if 16 <= (SAMPLE_BYTES - len(h)) % 25 <= 23)
    config = SANCTIONS.replace("primary_key: id", f"primary_key: {header.split(',')[0]}")
    records = "".join(record.format(i) for i in range(SAMPLE_BYTES // 25 + 10))
    path = write_sanctions(tmp_path, header + records, config)
    (problem,) = project_problems(load_config(path))
    assert problem.startswith("sources.un.tables.sanctions.csv.multiline: ") and " of the first " in problem, problem


def test_validate_names_a_file_whose_every_line_has_another_number_of_fields(tmp_path):
    """A run would quarantine every row of such a file and fail the table; validate says so beforehand."""
    path = write_project(tmp_path, CONFIG.split("unify:")[0])
    (tmp_path / "visits.csv").write_text("visit_id,contact_id\nv1,c1,web,x\nv2,c1,shop\n")
    problems = [p for p in project_problems(load_config(path)) if "shop.tables.visits" in p]
    assert len(problems) == 1, problems
    assert problems[0].startswith("sources.shop.tables.visits.path: every one of the 2 lines of ")
    assert "expected 2 columns, found 4 (1, e.g. line 2), expected 2 columns, found 3 (1, e.g. line 3)" in problems[0]
    assert "allow_empty: true" in problems[0]
    (tmp_path / "visits.csv").write_text("visit_id,contact_id\nv1,c1,web,x\nv2,c1\n")
    assert not any("shop.tables.visits" in p for p in project_problems(load_config(path)))


def test_validate_warns_of_rows_a_run_quarantines_for_quotes_it_reads_as_text(tmp_path, capsys):
    """A blank before a quote, a backslash-escaped quote, a quote with multiline that is never closed: a run
    quarantines those rows and loads the others, and validate says so beforehand, with the same reasons."""
    path = write_sanctions(tmp_path, 'id,name\n1, "Smith, John"\n2,Bob\n3,"Cy\n4,Dan\n')
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(
        "warning: line 8: sources.un.tables.sanctions.path: 1 of the 4 records of "
        f"{tmp_path / 'sanctions.csv'} (line 2) cannot be split into the header's columns; a run quarantines them "
        "and loads the others. line 2: expected 2 columns, found 3: a quote after a blank"
    )
    assert "(a stray quote)" in err  # line 4, told as before
    config = SANCTIONS.replace("primary_key: id\n", "primary_key: id\n        csv: {multiline: true}\n")
    path = write_sanctions(tmp_path, 'id,name\n1,Ann\n2,"Bob\n3,Cy\n4,Dan\n', config)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "(line 3) cannot be split" in err and "not closed before the end of the file (line 5)" in err


def test_validate_finds_a_headerless_cdm_partition_with_a_column_more_and_one_bad_byte_once(tmp_path):
    import json

    (tmp_path / "M1").mkdir()
    entity = {
        "$type": "LocalEntity",
        "name": "M1",
        "attributes": [{"name": "id", "dataType": "string"}, {"name": "name", "dataType": "string"}],
        "partitions": [{"name": "p0", "location": "M1/p0.csv"}],
    }
    (tmp_path / "model.json").write_text(json.dumps({"name": "cdm", "entities": [entity]}))
    (tmp_path / "M1" / "p0.csv").write_text('"C1","Ann","NL"\n"C2","Bob","DE"\n')
    (tmp_path / "w.csv").write_bytes(b"id,name,note\n1,Ren\xe9e,x\n2,Jo,y\n")
    (tmp_path / "c.yaml").write_text(
        """
sources:
  src:
    owner: data@contoso.example
    tables:
      m1: {format: cdm, path: model.json, entity: M1, primary_key: id}
      w: {format: csv, path: w.csv, primary_key: id}
"""
    )
    cdm, encoding = project_problems(load_config(tmp_path / "c.yaml"))
    assert cdm.startswith("sources.src.tables.m1.path: every one of the 2 lines of ") and "p0.csv" in cdm
    assert "than the entity's attributes (expected 2 columns, found 3 (2, e.g. line 1))" in cdm
    assert encoding.startswith("sources.src.tables.w.csv.encoding: ") and "line 2: byte 0xe9" in encoding


def test_validate_refuses_a_folder_file_written_with_another_delimiter(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.csv").write_text("id,name\n1,Ann\n")
    (tmp_path / "f" / "b.csv").write_text("ID,NAME\n2,Bob\n")
    path = write_sanctions(tmp_path, "", SANCTIONS.replace("sanctions.csv", "f"))
    assert project_problems(load_config(path)) == []
    (tmp_path / "f" / "b.csv").write_text("id;name\n2;Bob\n")
    (problem,) = project_problems(load_config(path))
    assert problem.startswith(f"sources.un.tables.sanctions.path: {tmp_path / 'f' / 'b.csv'}: its header reads as")
    assert "it looks ';'-separated" in problem


def test_a_mapped_column_renamed_in_the_file_is_named_as_the_likely_fix():
    from types import SimpleNamespace

    from ci_pipeline.validation import _missing_columns

    file = "tickets.csv"
    columns = ["ticket_id", "requester_name", "email_address", "requester_phone", "subject"]
    schemas = {("support", "tickets"): SimpleNamespace(columns=columns, file=file)}
    named = [
        ("unify.tables[3].columns.ticket_id", "support", "tickets", "ticket_id"),
        ("unify.tables[3].columns.requester_name", "support", "tickets", "requester_name"),
        ("unify.tables[3].columns.requester_email", "support", "tickets", "requester_email"),
        ("unify.tables[3].columns.requester_phone", "support", "tickets", "requester_phone"),
        ("activities.tables.tickets.title", "support", "tickets", "subjet"),
    ]
    first, second = _missing_columns(named, schemas)
    # Not 'requester_name' (the nearest spelling, mapped already): the column no key names that shares its word.
    assert first.startswith("unify.tables[3].columns.requester_email: support.tickets has no column 'requester_email' "
                            "(renamed to 'email_address'?); the columns of tickets.csv are ticket_id, ")  # fmt: skip
    # A typo (no unnamed column shares a word with it) gets the near miss of its spelling.
    assert "has no column 'subjet' (did you mean 'subject'?)" in second
