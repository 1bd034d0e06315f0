"""The configuration loader: every problem is reported with its file, key path and a fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ci_pipeline.config import load_config, resolve_secret
from ci_pipeline.config.unify import DEFAULT_BYPASS, NormalizeConfig
from ci_pipeline.errors import ConfigError, UserError

MINIMAL = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts:
        format: csv
        path: contacts.csv
        primary_key: contact_id
"""


def write(tmp_path, text: str):
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(text)
    return path


def test_minimal_config_loads_and_resolves_paths_against_its_folder(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    table = config.sources["crm"].tables["contacts"]
    assert table.csv.delimiter == ","
    assert config.resolve_location(table.path) == str(tmp_path / "contacts.csv")
    assert config.resolve_location("abfss://c@acct.dfs.core.windows.net/x") == "abfss://c@acct.dfs.core.windows.net/x"


def test_env_variable_chooses_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_PIPELINE_CONFIG", str(write(tmp_path, MINIMAL)))
    assert load_config().path == tmp_path / "ci_pipeline.yaml"


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    bad = MINIMAL.replace("format: csv", "format: xlsx").replace("primary_key: contact_id", "primary_kee: id")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, bad))
    text = str(caught.value)
    assert "ci_pipeline.yaml" in text
    assert "sources.crm.tables.contacts.format" in text
    assert "sources.crm.tables.contacts.primary_key: Field required; add this key" in text
    assert "sources.crm.tables.contacts.primary_kee" in text and "correct its spelling" in text


def test_missing_file_and_broken_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pass --config PATH or set CI_PIPELINE_CONFIG"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="line 3, column 1: not valid YAML"):
        load_config(write(tmp_path, "sources:\n  - [unclosed\n"))


def test_headerless_csv_must_declare_columns(tmp_path):
    with pytest.raises(ConfigError, match="needs 'columns' listing every column"):
        load_config(write(tmp_path, MINIMAL + "        csv: {header: false}\n"))


def test_secrets_are_references_never_plain_text(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="lake.connection_string: secrets are never written"):
        load_config(write(tmp_path, MINIMAL + "lake:\n  url: abfs://c/x\n  connection_string: AccountKey=abc\n"))
    monkeypatch.setenv("MY_SECRET", "s3cret")
    assert resolve_secret("env:MY_SECRET", "lake.account_key") == "s3cret"
    (tmp_path / "key.txt").write_text("from-file\n")
    assert resolve_secret("file:key.txt", "lake.account_key", tmp_path) == "from-file"
    monkeypatch.delenv("MY_SECRET")
    with pytest.raises(UserError, match="lake.account_key: environment variable MY_SECRET is not set"):
        resolve_secret("env:MY_SECRET", "lake.account_key")


def test_misspelt_keys_and_time_zones_get_a_suggestion_and_a_line(tmp_path):
    text = MINIMAL + "orchestration:\n  timezone: Europe/Amsterdm\n  freshness: {max_age_hour: 3}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "line 11: orchestration.timezone: unknown time zone 'Europe/Amsterdm'" in message
    assert "did you mean Europe/Amsterdam?" in message
    assert "line 12: orchestration.freshness.max_age_hour: Extra inputs are not permitted" in message
    assert "did you mean 'max_age_hours'?" in message


BOMB = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.timeout(30)
def test_an_alias_bomb_is_refused_instead_of_expanded(tmp_path):
    # About 700 bytes standing for 387 million values: expanding it would take minutes and gigabytes.
    with pytest.raises(ConfigError, match=r"line \d+: the aliases \(\*name\) used here expand to more than 100,000"):
        load_config(write(tmp_path, MINIMAL + BOMB))


def test_aliases_within_the_bound_still_work(tmp_path):
    text = MINIMAL.replace("      contacts:\n", "      contacts: &contacts\n") + "      again: *contacts\n"
    config = load_config(write(tmp_path, text))
    assert config.sources["crm"].tables["again"].primary_key == "contact_id"


def test_an_alias_cycle_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="line 10: an alias refers to a value that contains it"):
        load_config(write(tmp_path, MINIMAL + "x: &x [1, *x]\n"))


def _rule(depth: int) -> str:
    return "{all: [" * depth + "{field: profile.City, op: '=', value: Oslo}" + "]}" * depth


SEGMENT = (
    MINIMAL
    + """unify:
  tables:
    - {source: crm, table: contacts, columns: {city: city}}
segments:
  definitions:
    deep:
      rules:
        - RULE
"""
)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_rules_nested_600_deep_are_refused_with_the_key_path(tmp_path, style):
    if style == "flow":
        text = SEGMENT.replace("RULE", _rule(600))
    else:
        text = SEGMENT.replace("        - RULE\n", _block_rule(600))
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "segments.definitions.deep.rules[0].all[0].all[0]" in message
    assert "nested more than 128 levels deep" in message
    assert "RecursionError" not in message


def _block_rule(depth: int) -> str:
    lines = []
    indent = 8
    for _ in range(depth):
        lines.append(" " * indent + "- all:")
        indent += 4
    lines.append(" " * indent + "- {field: profile.City, op: '=', value: Oslo}")
    return "\n".join(lines) + "\n"


def test_rules_past_the_documented_depth_name_the_key_path(tmp_path):
    load_config(write(tmp_path, SEGMENT.replace("RULE", _rule(50))))
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, SEGMENT.replace("RULE", _rule(51))))
    message = str(caught.value)
    assert "segments.definitions.deep: rules[0].all[0].all[0]" in message
    assert "nest all/any/not more than 50 levels deep" in message


def test_measure_expressions_past_the_depth_limit_are_refused(tmp_path):
    measures = "measures:\n  attributes:\n    m: {expression: 'EXPR'}\n"
    load_config(write(tmp_path, MINIMAL + measures.replace("EXPR", "(" * 50 + "1" + ")" * 50)))
    for expression in ("(" * 600 + "1" + ")" * 600, "-" * 600 + "1"):
        with pytest.raises(ConfigError, match="measures.attributes.m: expression nests .* more than 50 levels"):
            load_config(write(tmp_path, MINIMAL + measures.replace("EXPR", expression)))


def test_a_plaintext_secret_is_refused_without_being_repeated(tmp_path):
    secret = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleS12YWx1ZQ=="
    lake = f"lake:\n  url: abfs://c/x\n  connection_string: '{secret}'\n  sas_token: sv=2024&sig=abcdef123\n"
    dataverse = (
        "publish:\n  sink:\n    kind: dataverse\n    dataverse:\n      url: https://x.crm.dynamics.com\n"
        "      credential: client_secret\n      tenant_id: t\n      client_id: c\n      client_secret: hunter2-pass\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL + lake + dataverse))
    message = str(caught.value)
    for key in ("lake.connection_string", "lake.sas_token", "publish.sink.dataverse.client_secret"):
        assert f"{key}: secrets are never written in the configuration; use 'env:" in message
    for value in (secret, "c2VjcmV0LWtleS12YWx1ZQ", "sig=abcdef123", "hunter2-pass"):
        assert value not in message
    assert all(value not in " ".join(caught.value.problems) for value in ("c2VjcmV0", "abcdef123", "hunter2"))
    hook = "orchestration:\n  notifications: {webhook_url: 'hooks.example/services/T0/B0/tok3n'}\n"
    with pytest.raises(ConfigError, match="orchestration.notifications.webhook_url") as caught:
        load_config(write(tmp_path, MINIMAL + hook))
    assert "tok3n" not in str(caught.value)


@pytest.mark.parametrize(
    ("publish", "key"),
    [
        ("  sink: {path: ../../elsewhere/sink.sqlite}\n", "publish.sink.path"),
        ("  sink: {path: /tmp/sink.sqlite}\n", "publish.sink.path"),
        ("  exports: [{name: bi, folder: ../../outside}]\n", "publish.exports[0].folder"),
        ("  exports: [{name: bi, folder: /etc}]\n", "publish.exports[0].folder"),
        ("  exports: [{name: bi, folder: 'exports/../../x'}]\n", "publish.exports[0].folder"),
    ],
)
def test_outputs_outside_project_and_lake_are_refused_unless_allowed(tmp_path, publish, key):
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .*publish.allow_outside_project: true"):
        load_config(write(project, MINIMAL + "publish:\n" + publish))
    allowed = load_config(write(project, MINIMAL + "publish:\n  allow_outside_project: true\n" + publish))
    assert allowed.publish.allow_outside_project


def test_outputs_inside_project_or_lake_are_accepted(tmp_path):
    publish = "publish:\n  sink: {path: out/sink.sqlite}\n  exports: [{name: bi, folder: exports/bi/../daily}]\n"
    load_config(write(tmp_path, MINIMAL + publish))
    # a local lake elsewhere may hold the sink too
    project, lake = tmp_path / "project", tmp_path / "lake"
    project.mkdir()
    elsewhere = f"lake: {{url: '{lake}'}}\npublish:\n  sink: {{path: '{lake / 'sink.sqlite'}'}}\n"
    load_config(write(project, MINIMAL + elsewhere))


def test_a_chain_of_segments_past_the_depth_limit_is_refused(tmp_path):
    def chain(n: int) -> str:
        lines = [f"    s{i}: {{rules: [{{segment: s{i + 1}}}]}}" for i in range(n - 1)]
        lines.append(f"    s{n - 1}: {{rules: [{{field: profile.City, op: '=', value: Oslo}}]}}")
        return SEGMENT.split("    deep:")[0] + "\n".join(lines) + "\n"

    load_config(write(tmp_path, chain(50)))
    with pytest.raises(ConfigError, match="segments.definitions.s0.rules: a chain of 51 segments"):
        load_config(write(tmp_path, chain(51)))


def test_problems_in_lists_get_the_line_of_the_item(tmp_path):
    schedules = "orchestration:\n  schedules:\n    - {name: a, select: '*', at: '01:00'}\n"
    schedules += "    - {name: b, select: '*', at: '02:00', timezone: Mars/Olympus}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL + schedules))
    assert "line 13: orchestration.schedules[1].timezone: unknown time zone 'Mars/Olympus'" in str(caught.value)
    # programs reading the problems get them without the line prefix
    assert caught.value.problems[0].startswith("orchestration.schedules[1].timezone:")


def test_every_broken_rule_of_a_segment_is_reported(tmp_path):
    rules = (
        "        - {field: profile.City, op: '=', value: Oslo}\n"
        "        - {field: profile.City, op: 'almost', value: Oslo, combine: union}\n"
        "        - {feld: profile.City, op: '=', value: Oslo, combine: union}\n"
        "        - {field: nowhere.City, op: '=', value: Oslo, combine: intersect}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, SEGMENT.replace("        - RULE\n", rules)))
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "segments.definitions.deep.rules[1].op",
        "segments.definitions.deep.rules[2]",
        "segments.definitions.deep.rules[3].field",
    ], problems


#: One activity over the contacts, for the checks of what reads activities.
ORDERS = """activities:
  tables:
    orders:
      source: crm
      table: contacts
      type: SalesOrder
      timestamp: created
      fields: {amount: total, channel: chan}
      customer: {source: crm, table: contacts, column: contact_id}
"""


def segment_filtering(activity: str, where: str) -> str:
    """The segment configuration whose one rule filters ``activity`` by ``where`` (a YAML flow list)."""
    return SEGMENT.replace("        - RULE\n", f"        - {{activity: {activity}, where: {where}}}\n")


def refused(tmp_path, text: str) -> list[str]:
    """The problems loading the configuration ``text`` is refused with."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


def test_a_segment_filter_on_an_activity_field_that_does_not_exist_is_named(tmp_path):
    where = "[{field: chanel, op: '=', value: web}, {field: amount, op: '>', value: 1}]"
    assert refused(tmp_path, segment_filtering("orders", where) + ORDERS) == [
        "segments.definitions.deep.rules[0].where[0].field: unknown activity field 'chanel' (did you mean 'channel'?); "
        "the activities have Activity, ActivityId, ActivityTimeStamp, ActivityType, CustomerId, amount, channel"
    ]


def test_a_measure_may_read_an_activity_type_and_an_unknown_one_lists_names_and_types(tmp_path):
    activities = (
        ORDERS
        + """measures:
  attributes:
    sales: {activity: SalesOrder, aggregate: sum, field: amount}
"""
    )
    base = SEGMENT.replace("segments:\n  definitions:\n    deep:\n      rules:\n        - RULE\n", "")
    assert load_config(write(tmp_path, base + activities)).measures.attributes["sales"].activity == ["SalesOrder"]
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, base + activities.replace("activity: SalesOrder", "activity: SalesOrders")))
    assert caught.value.problems == [
        "measures.attributes.sales.activity[0]: unknown activity 'SalesOrders' (did you mean 'SalesOrder'?); use one "
        "of orders, SalesOrder (an activity or a type)"
    ]


def test_a_measure_filter_comparing_a_declared_number_with_text_is_refused_before_the_run(tmp_path):
    text = (
        MINIMAL.replace("primary_key: contact_id", "primary_key: contact_id\n        columns: {total: double}")
        + """unify:
  tables:
    - {source: crm, table: contacts, columns: {city: city}}
"""
        + ORDERS
        + """measures:
  attributes:
    big: {activity: SalesOrder, aggregate: count, where: [{field: amount, op: '>', value: abc}]}
    web:
      activity: orders
      aggregate: count
      where: [{field: channel, op: '=', value: web}, {field: amount, op: '>', value: 5}]
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert caught.value.problems == [
        "measures.attributes.big.where[0].value: field amount is a number (crm.contacts column total is declared "
        "double); compare it with a number, not 'abc'"
    ]


def test_a_measure_filter_comparing_a_date_with_a_number_is_refused_before_the_run(tmp_path):
    """The run refused it in the measures step, after ingest, unify and activities, taking every later stage."""
    text = (
        MINIMAL
        + "unify:\n  tables:\n    - {source: crm, table: contacts, columns: {city: city}}\n"
        + ORDERS
        + """measures:
  attributes:
    recent: {activity: orders, aggregate: count, where: [{field: ActivityTimeStamp, op: '>=', value: 5}]}
    since: {activity: orders, aggregate: count, where: [{field: ActivityTimeStamp, op: '>=', value: '2026-01-31'}]}
    us: {activity: orders, aggregate: count, where: [{field: ActivityTimeStamp, op: '<', value: '01/31/2026'}]}
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert caught.value.problems == [
        "measures.attributes.recent.where[0].value: field ActivityTimeStamp is a date; write the value as YYYY-MM-DD, "
        "not 5"
    ]


def test_a_segment_activity_filter_comparing_a_declared_number_with_text_is_refused_before_the_run(tmp_path):
    declared = MINIMAL.replace("primary_key: contact_id", "primary_key: contact_id\n        columns: {total: double}")
    where = "[{field: channel, op: '=', value: web}, {field: amount, op: between, value: [low, 9]}]"
    assert refused(tmp_path, segment_filtering("SalesOrder", where).replace(MINIMAL, declared) + ORDERS) == [
        "segments.definitions.deep.rules[0].where[1].value: field amount is a number (crm.contacts column total is "
        "declared double); compare it with a number, not ['low', 9]"
    ]


def test_a_sum_of_a_field_its_source_declares_text_or_dates_is_refused_before_the_run(tmp_path):
    declared = "primary_key: contact_id\n        columns: {total: string, chan: date, created: datetime}"
    text = (
        MINIMAL.replace("primary_key: contact_id", declared)
        + "unify:\n  tables:\n    - {source: crm, table: contacts, columns: {city: city}}\n"
        + ORDERS
        + """measures:
  attributes:
    spend: {activity: orders, aggregate: sum, field: amount}
    when: {activity: SalesOrder, aggregate: average, field: ActivityTimeStamp}
    first_channel: {activity: orders, aggregate: first, field: channel}
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    fix = "or use an aggregate that does not add (count, count_distinct, min, max, first, last)"
    assert caught.value.problems == [
        "measures.attributes.spend.field: sum needs numbers, but field amount holds text (crm.contacts column total "
        "is declared string); if it holds numbers, declare sources.crm.tables.contacts.columns.total double, int64 "
        f"or decimal, {fix}",
        f"measures.attributes.when.field: average needs numbers, but ActivityTimeStamp holds dates; name a numeric "
        f"activity field {fix}",
    ]


ACTIVITY_SOURCES = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: contact_id}
      leads: {format: csv, path: leads.csv, primary_key: lead_id}
  shop:
    owner: web
    tables:
      orders: {format: csv, path: orders.csv, primary_key: order_id}
      visits: {format: csv, path: visits.csv, primary_key: visit_id}
      reviews: {format: csv, path: reviews.csv, primary_key: review_id}
      returns:
        format: csv
        path: returns.csv
        primary_key: return_id
        csv: {header: false}
        columns: {return_id: {type: string}, placed: {type: datetime}, contact: {type: string}}
unify:
  tables:
    - {source: crm, table: contacts, columns: {email: email}}
activities:
  tables:
"""


def test_activity_tables_that_name_missing_tables_columns_or_customers_are_each_reported(tmp_path):
    activity = "      {0}: {{type: Custom, source: shop, table: {1}, timestamp: {2}, customer: {3}}}\n"
    linked = "{source: crm, table: contacts, column: contact}"
    text = ACTIVITY_SOURCES + "".join(
        activity.format(*case)
        for case in [
            ("orders", "orders", "placed", linked),
            ("again", "orders", "placed", linked),
            ("typo", "ordres", "placed", linked),
            ("undeclared", "returns", "placed_at", linked),
            ("nobody", "visits", "placed", "{source: crm, table: ghosts, column: contact}"),
            ("not_unified", "reviews", "placed", "{source: crm, table: leads, column: contact}"),
        ]
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert caught.value.problems == [
        "activities.tables.again: shop.orders is already the activity 'orders'; declare each source table once",
        "activities.tables.typo: no table 'ordres' in source 'shop' (did you mean 'orders'?); declare it under sources",
        "activities.tables.undeclared.timestamp: column 'placed_at' is not declared in the table's columns",
        "activities.tables.nobody.customer: no table 'ghosts' in source 'crm'; point it at a customer table that "
        "takes part in unification",
        "activities.tables.not_unified.customer: crm.leads does not take part in unification, so its records have "
        "no customer; add it to unify.tables or point at a table that does",
    ]


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """Pasting a block that repeats a key (``method: probabilistic`` under ``method: rules``) must not leave the
    first silently dropped."""
    text = MINIMAL + "unify:\n  match:\n    method: rules\n    method: probabilistic\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert "line 13: unify.match.method is given twice (lines 12 and 13)" in str(caught.value)
    # An alias merged into a mapping (<<) is not a repeated key: the keys written beside it override its values.
    merged = MINIMAL.replace("        format: csv\n", "        <<: {format: parquet}\n        format: csv\n")
    assert load_config(write(tmp_path, merged)).sources["crm"].tables["contacts"].format == "csv"


def test_the_documented_default_bypass_values_are_the_default_and_unquoted_entries_are_read_or_named():
    text = (Path(__file__).parents[1] / "docs" / "config" / "unify.md").read_text()
    block = text.split("```yaml\nnormalize:\n  bypass_values:")[1].split("```")[0]
    assert yaml.safe_load("v:" + block)["v"] == DEFAULT_BYPASS
    # 0 and yes unquoted are the text they stand for; null is no value, and the message says to quote it.
    assert NormalizeConfig.model_validate({"bypass_values": [0, True, "n/a"]}).bypass_values == ["0", "true", "n/a"]
    with pytest.raises(ValueError, match=r"write the placeholder in quotes, e.g. 'null'"):
        NormalizeConfig.model_validate({"bypass_values": ["n/a", None]})


def test_a_value_yaml_reads_as_no_text_is_told_to_be_quoted(tmp_path):
    # A primary key column named 12: YAML reads it as a number, not as the column's name.
    bad = MINIMAL.replace("primary_key: contact_id", "primary_key: 12")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, bad))
    assert (
        "sources.crm.tables.contacts.primary_key: Input should be a valid string; got 12: write the text in quotes"
        in str(caught.value)
    )


def test_a_name_out_of_its_pattern_is_told_in_words_with_the_mended_name(tmp_path):
    text = MINIMAL.replace("crm:", "CRM:").replace("contacts:", "Contacts:") + (
        "activities:\n  tables:\n"
        "    Web-Orders: {type: Sales Order, source: Shop, table: orders, timestamp: at,"
        " customer: {source: crm, table: contacts, column: c}}\n"
        "unify:\n  normalize: {default_region: nl}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    lower = "must be lower-case letters (a-z), digits and underscores, starting with a letter"
    assert [p for p in caught.value.problems if " must be " in p] == [
        f"sources.CRM.[key]: the name 'CRM' {lower}: rename it 'crm' (and every reference to it)",
        f"sources.CRM.tables.Contacts.[key]: the name 'Contacts' {lower}: rename it 'contacts' (and every reference "
        "to it)",
        "unify.normalize.default_region: 'nl' must be a two-letter country code in capitals (US, NL, DE): write 'NL'",
        f"activities.tables.Web-Orders.[key]: the name 'Web-Orders' {lower}: rename it 'web_orders' (and every "
        "reference to it)",
        f"activities.tables.Web-Orders.source: 'Shop' {lower}: write 'shop'",
        "activities.tables.Web-Orders.type: 'Sales Order' must be letters (a-z, A-Z), digits and underscores, starting "
        "with a letter: write 'Sales_Order'",
    ]
    assert "match pattern" not in str(caught.value)


def test_numbers_written_with_thousands_separators_are_told_to_drop_the_comma(tmp_path):
    """Inside { } YAML reads value: 1,000 as value 1 and a key 000; in a block it reads the text '1,000'."""
    measures = """measures:
  attributes:
    spend: {activity: orders, aggregate: sum, field: amount}
    big: {activity: orders, aggregate: count, where: [{field: amount, op: '>=', value: 1,000}]}
"""
    rule = "{field: measure.spend, op: between, value: [1,000, 5,000]}"
    text = SEGMENT.replace("        - RULE\n", f"        - {rule}\n") + ORDERS + measures
    assert refused(tmp_path, text) == [
        "measures.attributes.big.where[0]: a key was read as the number 0: inside { } a comma separates entries, so "
        "a number written with a thousands separator ({..., value: 1,000}) is read as value 1 and a key 000; drop "
        "the comma (value: 1000)"
    ]
    text = text.replace("value: 1,000}]}", "value: 1000}]}")
    assert refused(tmp_path, text) == [
        "segments.definitions.deep.rules[0]: operator between needs a list of two values [low, high]; got 4 "
        "value(s): [1, 0, 5, 0] (a comma separates list items: write 1000, not 1,000)"
    ]
    text = text.replace(rule, "{field: measure.spend, op: '>=', value: '1,000'}")
    assert refused(tmp_path, text) == [
        "segments.definitions.deep.rules[0].value: measure spend is a number; compare it with a number, not '1,000' "
        "(write 1000, without the thousands separator)"
    ]


def test_a_measure_filter_names_the_near_miss_of_a_field_and_the_operators_as_the_docs_write_them(tmp_path):
    measures = """measures:
  attributes:
    web: {activity: orders, aggregate: count, where: [{field: chanel, op: '=', value: web}]}
    by: {activity: orders, aggregate: count, where: [{field: channel, op: equals, value: web}]}
"""
    base = SEGMENT.replace("segments:\n  definitions:\n    deep:\n      rules:\n        - RULE\n", "")
    problems = refused(tmp_path, base + ORDERS + measures)
    # One key path style: list positions in brackets, as the rules' own messages write them.
    assert problems == [
        "measures.attributes.by.where[0].op: unknown operator 'equals'; use one of =, !=, <, <=, >, >=, between, in, "
        "not in, contains, starts with, ends with, is null, not null, before, after, in the last"
    ]
    problems = refused(tmp_path, base + ORDERS + measures.replace("equals", "'='"))
    assert problems[0].startswith(
        "measures.attributes.web.where[0].field: unknown field 'chanel' (did you mean 'channel'?)"
    )
