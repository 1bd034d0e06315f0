"""Run-time governance: who unattended runs act as, and whether an environment must be initialised to run."""

from __future__ import annotations

from pydantic import Field

from ci_pipeline.config.base import StrictModel


class GovernanceConfig(StrictModel):
    """How runs are checked against the environment's governance store (docs/governance.md)."""

    #: The principal that runs started by a schedule or sensor, and the failure notification, act as. ``init``
    #: (run by an admin) gives it the contributor role when it has none; share with it the connections unattended
    #: runs use. Unattended runs refresh every source (the system refresh). ``null``: such runs are refused in an
    #: initialised environment, because nobody launched them.
    service_principal: str | None = Field("ci-pipeline-scheduler", min_length=1, max_length=200)
    #: Refuse every run while the environment is not initialised (``ci-pipeline init``). Off by default, so a
    #: fresh checkout runs before anyone has set up governance; turn it on in shared environments.
    required: bool = False
