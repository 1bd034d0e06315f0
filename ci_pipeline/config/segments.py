"""Segments: groups of customers defined by rules over profile fields, measures and activities."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ci_pipeline.config.base import Name, StrictModel
from ci_pipeline.grammar.rules import MAX_RULE_DEPTH, RFM_TEMPLATES, too_deep
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_NAME


class SegmentSpec(StrictModel):
    """One segment: rules combined in order (see docs/config/segments.md)."""

    description: str = ""
    #: ``dynamic`` segments are evaluated every run; ``static`` ones keep their members until refreshed by hand
    #: (``ci-pipeline segment refresh NAME``).
    type: Literal["dynamic", "static"] = "dynamic"
    #: A suggested segment (``rfm_champions``, ``rfm_loyal``, ``rfm_at_risk``, ``rfm_hibernating``, ``rfm_new``)
    #: instead of ``rules``.
    template: str | None = None
    rules: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _rules_or_template(self):
        deep = too_deep(self.rules)
        if deep is not None:
            shown = deep if len(deep) <= 120 else f"{deep[:60]}...{deep[-40:]}"
            raise ValueError(
                f"{shown}: the rules nest all/any/not more than {MAX_RULE_DEPTH} levels deep; flatten them, or "
                "move a part into its own segment and refer to it with {segment: name}"
            )
        if self.template is not None:
            if self.template not in RFM_TEMPLATES:
                raise ValueError(f"unknown template {self.template!r}; use one of {', '.join(RFM_TEMPLATES)}")
            if self.rules:
                raise ValueError("give either 'template' or 'rules', not both")
        elif not self.rules:
            raise ValueError("a segment needs 'rules' (or a 'template')")
        return self

    def raw_rules(self) -> list[dict[str, Any]]:
        """The rules as written, or the template's."""
        return RFM_TEMPLATES[self.template] if self.template else self.rules


class SegmentsConfig(StrictModel):
    """Groups of customers defined by rules, published per customer as SegmentMembership."""

    #: SegmentProvider of the published rows (default: the project name).
    provider: str | None = None
    membership_type: Literal["Customer", "Contact", "Account"] = "Customer"
    #: The ``Name`` part of SegmentMembership's msdynci_identifier: the name of the membership list. It stays the
    #: same when segments are added or removed, so each customer's row keeps its GUID.
    membership_name: str = Field(SEGMENT_MEMBERSHIP_NAME, min_length=1)
    definitions: dict[Name, SegmentSpec] = {}
