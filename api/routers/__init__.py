"""One router per resource. To add one: write api/routers/NAME.py with `router = APIRouter(...)`
and list it in PROTECTED below; every route in it then needs at least a viewer key (declare
`who: Operator` or `who: Admin` on routes that need more) and its mutating calls are audited."""

from __future__ import annotations

from api.routers import (
    audit,
    dashboard,
    dead_letters,
    failures,
    health,
    jobs,
    keys,
    metrics,
    mirrors,
    objects,
    reports,
    rpo,
    status,
)

OPEN = [health.router, dashboard.router]  # no key needed: /healthz, /readyz, the dashboard's page shell (no data)
PROTECTED = [metrics.router, status.router, mirrors.router, objects.router, jobs.router, failures.router,
             audit.router, keys.router, rpo.router, reports.router, dead_letters.router]
