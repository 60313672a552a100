"""RPO over time, computed from replication intervals (pure: no I/O, no clock).

A replication (one version x one target) is *pending* from the moment the ledger saw the
version until it is completed, superseded or skipped (a failed one stays pending until a
newer version of its key is copied). While pending it holds the target's recovery point
at its source write time, so

    RPO(t) = t - source_time of the oldest version pending at t      (0 when none is)

The source time of the oldest pending version is a step function of t: it changes only
when a replication starts or stops being pending. `rpo_steps` computes it with one sweep
over the sorted start/end events and a min-heap of pending source times (lazy deletion),
O(n log n). Between steps RPO grows with slope 1, so a step's worst RPO is at its end.

The RPO of a mirror or a group is the worst of its targets': the same sweep over the
union of their intervals. A breach is a maximal interval where RPO(t) > objective.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Interval:
    """One replication's pending time: [start, end), end None while still pending."""

    start: float  # when the ledger saw the version (replications.created_at)
    end: float | None  # completed / superseded / skipped (or resolved) at; None = still pending
    source_time: float  # when the write happened on the source
    ref: Any = None  # the caller's handle on the row


@dataclass(frozen=True, slots=True)
class Step:
    """[start, end) during which the oldest pending source time is `oldest` (None: nothing pending)."""

    start: float
    end: float
    oldest: float | None

    def rpo_at(self, t: float) -> float:
        return 0.0 if self.oldest is None else max(0.0, t - self.oldest)

    @property
    def peak(self) -> float:
        """The step's worst RPO (its supremum, reached as t approaches `end`)."""
        return self.rpo_at(self.end)


@dataclass(frozen=True, slots=True)
class Breach:
    """A maximal interval where RPO(t) > objective. `open_at_end`: still in breach when the
    period ended. `refs`: the intervals (replications) that were late during it."""

    start: float
    end: float
    peak_rpo: float
    peak_at: float
    open_at_end: bool
    refs: tuple = ()

    @property
    def duration(self) -> float:
        return self.end - self.start


def _clip(iv: Interval, since: float, until: float) -> tuple[float, float]:
    end = until if iv.end is None else min(iv.end, until)
    return max(iv.start, since), end


def rpo_steps(intervals: Sequence[Interval], since: float, until: float) -> list[Step]:
    """The oldest-pending step function over [since, until), clipped to it; adjacent steps
    with the same `oldest` are merged. Intervals that end before `since`, start at or after
    `until`, or have no length are ignored. Raises ValueError when until < since."""
    if until < since:
        raise ValueError("until must not be before since")
    events: list[tuple[float, int, int]] = []
    for i, iv in enumerate(intervals):
        s, e = _clip(iv, since, until)
        if e > s:
            events.append((s, 1, i))
            events.append((e, 0, i))  # at one instant ends go first: [start, end) is half open
    events.sort()
    heap: list[tuple[float, int]] = []
    alive = bytearray(len(intervals))
    steps: list[Step] = []

    def oldest() -> float | None:
        while heap and not alive[heap[0][1]]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def emit(a: float, b: float, o: float | None) -> None:
        if steps and steps[-1].oldest == o and steps[-1].end == a:
            steps[-1] = Step(steps[-1].start, b, o)
        else:
            steps.append(Step(a, b, o))

    t_prev, j = since, 0
    while j < len(events):
        t = events[j][0]
        if t > t_prev:
            emit(t_prev, t, oldest())
            t_prev = t
        while j < len(events) and events[j][0] == t:
            _, kind, i = events[j]
            if kind:
                alive[i] = 1
                heapq.heappush(heap, (intervals[i].source_time, i))
            else:
                alive[i] = 0
            j += 1
    if until > t_prev or not steps:
        emit(t_prev, until, oldest())
    return steps


def worst(steps: Iterable[Step], since: float) -> tuple[float, float]:
    """(worst RPO, when) over the steps; (0, since) when nothing was ever pending."""
    best, at = 0.0, since
    for s in steps:
        if s.peak > best:
            best, at = s.peak, s.end
    return best, at


def find_breaches(steps: Sequence[Step], objective: float, until: float) -> list[Breach]:
    """Maximal intervals where RPO(t) > objective, in time order."""
    out: list[Breach] = []
    cur: list[float] | None = None  # [start, end, peak, peak_at]

    def close() -> None:
        nonlocal cur
        if cur is not None:
            out.append(Breach(cur[0], cur[1], cur[2], cur[3], open_at_end=cur[1] >= until))
            cur = None

    for s in steps:
        if s.oldest is None:
            close()
            continue
        b_start = max(s.start, s.oldest + objective)  # RPO(t) > objective  <=>  t > oldest + objective
        if b_start >= s.end:
            close()
            continue
        if cur is not None and (b_start > s.start or cur[1] != s.start):
            close()
        if cur is None:
            cur = [b_start, s.end, s.peak, s.end]
        else:
            cur[1] = s.end
            if s.peak > cur[2]:
                cur[2], cur[3] = s.peak, s.end
    close()
    return out


def attach_late(breaches: list[Breach], intervals: Sequence[Interval], objective: float,
                since: float, until: float) -> list[Breach]:
    """The breaches with `refs`: the intervals whose own age exceeded the objective while
    pending in the period. Such a late stretch [max(start, source_time + objective), end)
    lies inside exactly one breach (the RPO is at least its age), found by bisection."""
    if not breaches:
        return breaches
    starts = [b.start for b in breaches]
    refs: list[list] = [[] for _ in breaches]
    for iv in intervals:
        s, e = _clip(iv, since, until)
        s = max(s, iv.source_time + objective)
        if e <= s:
            continue
        mid = (s + e) / 2
        k = bisect_right(starts, mid) - 1
        if k >= 0 and mid <= breaches[k].end:
            refs[k].append(iv.ref)
    return [Breach(b.start, b.end, b.peak_rpo, b.peak_at, b.open_at_end, tuple(r))
            for b, r in zip(breaches, refs, strict=True)]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ascending values; None when empty. The same
    definition as the ledger's SQL percentiles (ledger.rpo.latency_percentiles)."""
    n = len(sorted_values)
    if not n:
        return None
    rank = max(1, math.ceil(q * n / 100))
    return sorted_values[min(rank, n) - 1]


def latency_summary(values: Iterable[float]) -> dict:
    """count, p50, p90, p99, max of replication latencies (seconds)."""
    v = sorted(values)
    return dict(count=len(v), p50=percentile(v, 50), p90=percentile(v, 90), p99=percentile(v, 99),
                max=v[-1] if v else None)


def series(steps: Sequence[Step], since: float, until: float, max_points: int = 600) -> list[tuple[float, float]]:
    """RPO(t) as (t, rpo) points; joining them with straight lines draws the curve exactly
    (a jump is two points at one instant). Beyond `max_points` the curve is reduced to the
    worst RPO per time bin, so peaks are never lost."""
    pts: list[tuple[float, float]] = []
    for s in steps:
        for p in ((s.start, s.rpo_at(s.start)), (s.end, s.peak)):
            if not pts or pts[-1] != p:
                pts.append(p)
    if len(pts) <= max_points or until <= since:
        return pts
    bins = max_points // 2
    width = (until - since) / bins
    peak = [0.0] * bins
    for s in steps:
        if s.oldest is None:
            continue
        first, last = int((s.start - since) / width), min(int((s.end - since) / width), bins - 1)
        for b in range(max(first, 0), last + 1):
            t = min(s.end, since + (b + 1) * width)
            peak[b] = max(peak[b], s.rpo_at(t))
    out: list[tuple[float, float]] = []
    for b, v in enumerate(peak):
        out.append((since + b * width, v))
        out.append((since + (b + 1) * width, v))
    return out
