"""Tiny customer tables and a unify configuration over them."""

from __future__ import annotations

import pandas as pd

from ci_pipeline.config.unify import UnifyConfig

KEYS = {("crm", "contacts"): "contact_id", ("shop", "customers"): "customer_id", ("loyalty", "members"): "member_id"}


def config(**overrides) -> UnifyConfig:
    raw = {
        "tables": [
            {
                "source": "crm",
                "table": "contacts",
                "columns": {
                    "first_name": "first_name",
                    "last_name": "last_name",
                    "email": "email",
                    "phone": "phone",
                    "street": "street",
                    "city": "city",
                    "modified_at": "custom",
                },
                "recency_column": "modified_at",
                "dedup": {"rules": [{"name": "same_email", "conditions": [{"field": "email"}]}]},
            },
            {
                "source": "shop",
                "table": "customers",
                "columns": {
                    "full_name": "full_name",
                    "email": "email",
                    "phone": "phone",
                    "address": "street",
                    "town": "city",
                },
            },
            {
                "source": "loyalty",
                "table": "members",
                "columns": {"first_name": "first_name", "last_name": "last_name", "phone": "phone", "tier": "custom"},
            },
        ],
        "match": {
            "rules": [
                {
                    "name": "email_name",
                    "conditions": [{"field": "email"}, {"field": "first_name", "precision": "high"}],
                },
                {
                    "name": "phone_last_name",
                    "conditions": [{"field": "phone"}, {"field": "last_name", "precision": "medium"}],
                },
            ]
        },
    }
    raw.update(overrides)
    return UnifyConfig.model_validate(raw)


def frames() -> dict[tuple[str, str], pd.DataFrame]:
    crm = pd.DataFrame(
        {
            "contact_id": ["c1", "c2", "c3", "c4"],
            "first_name": ["Robert", "Ann", "Ann", "José"],
            "last_name": ["Smith", "Lee", "Lee", "García"],
            "email": ["Bob.Smith@Example.com ", "ann@example.com", "ANN@example.com", None],
            "phone": ["(555) 010-1234", "N/A", "555-010-9999", "+34 91 123 4567"],
            "street": ["12 Main Street", "1 First Avenue", None, "Calle Mayor 3"],
            "city": ["Springfield", "Shelbyville", "Shelbyville", "Madrid"],
            "modified_at": ["2026-01-01", "2026-03-01", "2026-05-01", "2026-02-01"],
        }
    ).astype("string")
    shop = pd.DataFrame(
        {
            "customer_id": ["s1", "s2", "s3"],
            "full_name": ["Bob Smith", "Jose Garcia", "Zed Nobody"],
            "email": ["bob.smith@example.com", "", "unknown"],
            "phone": ["+1 555 010 1234 ext 7", "0034911234567", "000-000-0000"],
            "address": ["12 Main St.", None, "9 Elm Road"],
            "town": ["Springfield", "Madrid", "Ogdenville"],
        }
    ).astype("string")
    loyalty = pd.DataFrame(
        {
            "member_id": ["m1", "m2"],
            "first_name": ["Rob", "Pat"],
            "last_name": ["Smith", "Jones"],
            "phone": ["555.010.1234", None],
            "tier": ["gold", "silver"],
        }
    ).astype("string")
    return {("crm", "contacts"): crm, ("shop", "customers"): shop, ("loyalty", "members"): loyalty}
