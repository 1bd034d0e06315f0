"""The one-to-one rules between a pipeline environment, its lake and a Dataverse environment (the sink).

A Dataverse environment holds one marker row, written by the first governed run that publishes to it: the
pipeline environment's id and the lake's storage account. Later runs compare themselves with it:

- another pipeline environment is refused ("already attached to another environment");
- the same pipeline environment with another storage account is refused (one storage account per Dataverse
  environment, as in Customer Insights - Data);
- where both regions are configured, the lake and the Dataverse environment must be in the same one.

Both sinks (the embedded SQLite file and the Web API) keep the marker and apply :func:`check_marker`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ci_pipeline.errors import UserError


@dataclass(frozen=True)
class AttachmentClaim:
    """What a run publishing to a sink claims: its environment, its lake's storage account, the two regions."""

    environment_id: str
    #: The lake's storage account name, or ``file://<folder>`` for a local lake.
    storage_account: str
    lake_region: str | None = None
    dataverse_region: str | None = None

    def marker(self) -> dict:
        """The marker row to write for this claim."""
        return {
            "environment_id": self.environment_id,
            "storage_account": self.storage_account,
            "region": self.dataverse_region or self.lake_region or "",
            "attached_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }


class AttachmentError(UserError):
    """A run would attach a Dataverse environment against the one-to-one rules."""


def check_marker(existing: dict | None, claim: AttachmentClaim, sink: str) -> bool:
    """Check ``claim`` against the sink's marker row (None: no marker yet). Returns True when a marker is to be
    written (there was none).

    Raises:
        AttachmentError: naming the sink, both sides and how to detach.
    """
    if claim.lake_region and claim.dataverse_region and claim.lake_region != claim.dataverse_region:
        raise AttachmentError(
            f"{sink}: publish.sink.region {claim.dataverse_region!r} and lake.region {claim.lake_region!r} differ; a "
            "Dataverse environment and its lake must be in the same Azure region: correct one of the two keys"
        )
    if existing is None:
        return True
    if existing.get("environment_id") != claim.environment_id:
        raise AttachmentError(
            f"{sink} is already attached to another environment (pipeline environment "
            f"{existing.get('environment_id')}, since {existing.get('attached_at')}); a Dataverse environment "
            "serves one pipeline environment: run `ci-pipeline connections detach-dataverse` in that environment "
            "(it removes the marker), or publish to another Dataverse environment"
        )
    if existing.get("storage_account") != claim.storage_account:
        raise AttachmentError(
            f"{sink} is connected to storage account {existing.get('storage_account')!r}; it refuses another "
            f"({claim.storage_account!r}): a Dataverse environment uses one storage account. Point lake.url back "
            "at it, or detach with `ci-pipeline connections detach-dataverse` and attach again"
        )
    return False
