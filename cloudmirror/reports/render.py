"""CSV rendering of the report data (the JSON file is the data itself, see signing.py).

The CSV is a sequence of sections, each a title row `[name]`, a header row and data rows,
separated by blank lines: report, scope_mirrors, summary, targets, breaches,
breach_objects, failovers, drills, rpo_series. Nested fields are flattened with dots
(`latency_seconds.p50`); empty cells are nulls; booleans are true/false; numbers are
written exactly as in the JSON; text beginning with = + - @ tab or CR is prefixed with a
single quote (OWASP CSV injection guidance: object keys are user data).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from cloudmirror.reports.data import DrillRecord, FailoverRecord
from cloudmirror.reports.signing import canonical_data, sha256_hex

# a spreadsheet runs a cell that begins with one of these as a formula (OWASP "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return " ".join(_text(x) for x in v)
    return str(v)


def cell(v: Any) -> str:
    """A CSV cell: null empty, booleans true/false, numbers as in the JSON, lists joined by
    spaces; text (object keys, names: user data) that begins with = + - @ tab or CR gets a
    leading single quote, so that a spreadsheet shows it instead of running it."""
    s = _text(v)
    if not isinstance(v, (int, float)) and s.startswith(FORMULA_STARTS):
        return "'" + s
    return s


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def data_digest(data: dict) -> str:
    """sha256 of the canonical JSON of the data: the same value in every format."""
    return "sha256:" + sha256_hex(canonical_data(data))


def _columns(rows: list[dict], default: list[str]) -> list[str]:
    cols: list[str] = list(default)
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def render_csv(data: dict) -> bytes:
    """The unsigned CSV bytes of the report data."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    # a CR inside a cell must be quoted, or a spreadsheet starts a new row there (and the next
    # "cell" could be a formula); csv quotes it only when it is in the line terminator
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def row(cells: list[str]) -> None:
        (quoted if any("\r" in c for c in cells) else plain).writerow(cells)

    def section(name: str, columns: list[str], rows: list[dict]) -> None:
        row([f"[{name}]"])
        row(columns)
        for r in rows:
            row([cell(r.get(c)) for c in columns])
        row([])

    def fields(name: str, values: dict) -> None:
        section(name, ["field", "value"], [dict(field=k, value=v) for k, v in flatten(values).items()])

    period, scope = data["period"], data["scope"]
    fields("report", dict(report=data["report"], schema=data["schema"], generated_at=data["generated_at"],
                          data_digest=data_digest(data), since=period["since"], until=period["until"],
                          period_seconds=period["seconds"], scope_kind=scope["kind"], scope_name=scope["name"],
                          objective_seconds=data["objective_seconds"]))
    section("scope_mirrors", ["name", "source", "targets", "rpo_objective_seconds"], scope["mirrors"])
    fields("summary", data["summary"])
    targets = [flatten(t) for t in data["targets"]]
    section("targets", _columns(targets, ["mirror", "target"]), targets)
    breaches = [{k: v for k, v in b.items() if k != "objects"} for b in data["breaches"]]
    section("breaches", _columns(breaches, ["number", "start", "end", "duration_seconds", "peak_rpo_seconds"]),
            breaches)
    objects = [dict(breach=b["number"], **o) for b in data["breaches"] for o in b["objects"]]
    section("breach_objects", _columns(objects, ["breach", "mirror", "target", "key", "op", "status", "source_time",
                                                 "seen_at", "replicated_at", "pending_seconds"]), objects)
    section("failovers", _columns(data["failovers"], list(FailoverRecord.__annotations__)), data["failovers"])
    section("drills", _columns(data["drills"], list(DrillRecord.__annotations__)), data["drills"])
    section("rpo_series", ["t_epoch", "rpo_seconds"], [dict(t_epoch=t, rpo_seconds=v) for t, v in data["rpo_series"]])
    return buf.getvalue().encode()


def read_csv_sections(blob: bytes) -> dict[str, list[dict[str, str]]]:
    """Parse a report CSV (signed or not) back into {section: [row dicts]}."""
    text = blob.decode()
    out: dict[str, list[dict[str, str]]] = {}
    name, header = None, None
    for row in csv.reader(io.StringIO(text)):
        if row and row[0].startswith("# cloudmirror-signature"):
            break
        if not row:
            name, header = None, None
        elif name is None and len(row) == 1 and row[0].startswith("[") and row[0].endswith("]"):
            name = row[0][1:-1]
            out[name] = []
        elif header is None:
            header = row
        else:
            out[name].append(dict(zip(header, row, strict=True)))
    return out
