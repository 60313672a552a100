"""What failover, failback and drills share."""

from __future__ import annotations

from cloudmirror.config import Mirror
from cloudmirror.ledger.mirrors import SpecRow
from cloudmirror.services import mirrors


def load_mirror(service, name: str) -> tuple[SpecRow, Mirror]:
    """The mirror as configured (not reversed) and its row. Raises MirrorNotFound."""
    row = mirrors.spec_row(service.ledger, name)
    return row, Mirror.model_validate(row.spec)
