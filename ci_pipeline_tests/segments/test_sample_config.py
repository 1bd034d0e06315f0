"""The sample sections of activities, measures, predictions, enrich and segments validate against the sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.checks import measures_problems
from ci_pipeline.config.measures import MeasuresConfig

TEMPLATES = Path(__file__).resolve().parents[2] / "ci_pipeline" / "generate" / "templates"

#: The sample data set's tables (the contract in the project's sample description), as a sources section.
SOURCES = {
    "crm": {"owner": "o", "tables": {"contacts": {"format": "csv", "path": "c.csv", "primary_key": "contact_id"}}},
    "ecommerce": {
        "owner": "o",
        "tables": {
            name: {"format": "parquet", "path": f"{name}.parquet", "primary_key": key}
            for name, key in [
                ("customers", "customer_id"),
                ("orders", "order_id"),
                ("order_lines", "line_id"),
                ("web_sessions", "session_id"),
            ]
        },
    },
    "loyalty": {
        "owner": "o",
        "tables": {
            "members": {"format": "cdm", "path": "model.json", "primary_key": "member_id"},
            "points": {"format": "cdm", "path": "model.json", "primary_key": "transaction_id"},
        },
    },
    "support": {
        "owner": "o",
        "tables": {
            "tickets": {"format": "csv", "path": "t.csv", "primary_key": "ticket_id"},
            "surveys": {"format": "csv", "path": "s.csv", "primary_key": "survey_id"},
        },
    },
}


def sections() -> dict:
    out = {}
    for name in ("activities", "measures", "predictions", "enrich", "segments"):
        out.update(yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text()))
    return out


def test_sample_sections_validate_and_cross_reference():
    config = ProjectConfig.model_validate({"sources": SOURCES, **sections()})
    problems = [p for p in config.cross_reference_problems() if "add a 'unify' section" not in p]
    assert problems == []
    assert set(config.activities.tables) == {"orders", "order_lines", "web_sessions", "points", "surveys", "tickets"}
    assert {"high_value", "lapsed", "new_this_quarter", "loyal_members", "unhappy"} <= set(config.segments.definitions)
    assert str(config.measures.as_of) == "2026-06-30"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("measures", "attributes", "x"), {"activity": "ghost", "aggregate": "count"}),
        (("measures", "attributes", "y"), {"activity": "orders", "aggregate": "sum", "field": "colour"}),
        (("measures", "attributes", "z"), {"expression": "total_spend / nothing"}),
        (("segments", "definitions", "bad"), {"rules": [{"segment": "nowhere"}]}),
    ],
)
def test_cross_reference_errors_name_the_key(change, message):
    data = {"sources": SOURCES, **sections()}
    section, kind, name = change
    data[section][kind][name] = message
    problems = ProjectConfig.model_validate(data).cross_reference_problems()
    assert any(p.startswith(f"{section}.{kind}.{name}") for p in problems), problems


def test_measure_cycles_are_named():
    config = MeasuresConfig.model_validate(
        {"attributes": {"a": {"expression": "b + 1"}, "b": {"expression": "a * 2"}, "c": {"expression": "c"}}}
    )
    problems = measures_problems(ProjectConfig.model_validate({"sources": SOURCES, "measures": config.model_dump()}))
    assert "measures.attributes.a: reference cycle a -> b -> a; break it" in problems
    assert "measures.attributes.c: reference cycle c -> c; break it" in problems


def test_load_config_reports_rule_errors_with_key_paths(sample_copy):
    from ci_pipeline.config import load_config
    from ci_pipeline.errors import ConfigError

    path = sample_copy / "ci_pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    data["segments"]["definitions"]["broken"] = {
        "rules": [
            {"field": "measure.total_spend", "op": "after", "value": "2026-01-01"},
            {"combine": "union", "segment": "loop"},
        ]
    }
    data["segments"]["definitions"]["loop"] = {"rules": [{"segment": "broken"}]}
    data["segments"]["definitions"]["typo"] = {"rules": [{"field": "measure.total_spend", "op": "greater"}]}
    data["measures"]["attributes"]["bad"] = {"activity": "orders", "aggregate": "sum", "field": "amount", "colour": 1}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "measures.attributes.bad.colour" in text
    # Rule problems are reported once the sections validate; fix the measure and look again.
    del data["measures"]["attributes"]["bad"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "segments.definitions.broken.rules[0].op: after does not apply to measure total_spend" in text
    assert "segments reference each other in a cycle broken -> loop -> broken" in text
    assert "segments.definitions.typo.rules[0].op: unknown operator 'greater'" in text


def test_activity_customer_table_must_take_part_in_unification(sample_copy):
    from ci_pipeline.config import load_config
    from ci_pipeline.errors import ConfigError

    path = sample_copy / "ci_pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    data["activities"]["tables"]["orders"]["customer"] = {
        "source": "ecommerce",
        "table": "orders",
        "column": "order_id",
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match="activities.tables.orders.customer: ecommerce.orders does not take part"):
        load_config(path)
