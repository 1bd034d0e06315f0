"""The sample configuration sections of activities, measures and segments validate against the sample's sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ci_pipeline.config import ProjectConfig
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
    for name in ("activities", "measures", "segments"):
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
    problems = config.problems(ProjectConfig.model_validate({"sources": SOURCES}))
    assert "measures.attributes.a: reference cycle a -> b -> a; break it" in problems
    assert "measures.attributes.c: reference cycle c -> c; break it" in problems
