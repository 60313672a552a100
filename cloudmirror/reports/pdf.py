"""PDF rendering of the report data (reportlab), with a chart of RPO over time and the
objective line (matplotlib, Agg canvas, embedded as a PNG image). Numbers are printed
exactly as in the JSON. Text uses DejaVu Sans (shipped with matplotlib) so any object key
prints. The document info carries the data digest (Keywords) and the scope (Subject).
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from cloudmirror.reports.render import data_digest, flatten

FONT, BOLD = "CMDejaVu", "CMDejaVu-Bold"
_fonts_lock = threading.Lock()

SUMMARY_LABELS = {
    "replications": "Replications (versions x targets)",
    "within_objective": "Replicated within the objective",
    "late": "Late (over the objective, failed, or still pending)",
    "in_flight": "In flight (pending, not yet late)",
    "percent_within_objective": "% replicated within the objective",
    "worst_rpo_seconds": "Worst RPO (s)",
    "worst_rpo_at": "Worst RPO at (UTC)",
    "rpo_at_end_seconds": "RPO at the end of the period (s)",
    "breaches": "Breaches",
    "breach_seconds": "Time in breach (s)",
    "percent_time_within_objective": "% of the time within the objective",
    "latency_seconds.count": "Copies completed in the period",
    "latency_seconds.p50": "Replication latency p50 (s)",
    "latency_seconds.p90": "Replication latency p90 (s)",
    "latency_seconds.p99": "Replication latency p99 (s)",
    "latency_seconds.max": "Replication latency max (s)",
}


def text(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(text(x) for x in v) or "-"
    return str(v)


def _register_fonts() -> None:
    from matplotlib import get_data_path
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    with _fonts_lock:
        if FONT in pdfmetrics.getRegisteredFontNames():
            return
        ttf = Path(get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont(BOLD, str(ttf / "DejaVuSans-Bold.ttf")))


def chart_png(data: dict) -> bytes:
    """RPO over the period with the objective line and the breaches shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 2.8), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pts = data["rpo_series"]
    xs = [datetime.fromtimestamp(t, UTC) for t, _ in pts]
    ax.plot(xs, [v for _, v in pts], color="#1f4e79", linewidth=1.2, label="RPO")
    ax.axhline(data["objective_seconds"], color="#c0392b", linestyle="--", linewidth=1,
               label=f"objective {data['objective_seconds']} s")
    for b in data["breaches"]:
        ax.axvspan(_dt(b["start"]), _dt(b["end"]), color="#c0392b", alpha=0.12, linewidth=0)
    ax.set_xlim(_dt(data["period"]["since"]), _dt(data["period"]["until"]))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("RPO (s)")
    ax.set_xlabel("UTC", fontsize=7)
    loc = AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _dt(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def render_pdf(data: dict, *, key_id: str) -> bytes:
    """The unsigned PDF bytes of the report data."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    _register_fonts()
    digest = data_digest(data)
    styles = getSampleStyleSheet()
    body = ParagraphStyle("cm-body", parent=styles["BodyText"], fontName=FONT, fontSize=8.5, leading=11)
    small = ParagraphStyle("cm-small", parent=body, fontSize=7, leading=9)
    tiny = ParagraphStyle("cm-tiny", parent=body, fontSize=6.5, leading=8)
    h1 = ParagraphStyle("cm-h1", parent=styles["Title"], fontName=BOLD, fontSize=16)
    h2 = ParagraphStyle("cm-h2", parent=styles["Heading2"], fontName=BOLD, fontSize=11, spaceBefore=8)
    h3 = ParagraphStyle("cm-h3", parent=h2, fontSize=9.5, spaceBefore=6)

    def p(s: Any, style=body) -> Paragraph:
        return Paragraph(escape(text(s)), style)

    def table(header: list[str], rows: list[list[Any]], widths: list[float] | None = None, style=body) -> Table:
        t = Table([[p(h, style) for h in header]] + [[p(c, style) for c in r] for r in rows],
                  colWidths=widths, repeatRows=1, hAlign="LEFT")
        t.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
                               ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#b0b8c0")),
                               ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3)]))
        return t

    scope, period, summary = data["scope"], data["period"], data["summary"]
    story: list = [
        Paragraph(escape(data["report"]), h1),
        p(f"{scope['kind'].capitalize()}: {scope['name']}"),
        p(f"Period (UTC): {period['since']} to {period['until']} ({period['seconds']} s)"),
        p(f"RPO objective: {data['objective_seconds']} s"),
        p(f"Generated at: {data['generated_at']}"),
        Paragraph("Scope", h2),
        table(["Mirror", "Source", "Targets", "Objective (s)"],
              [[m["name"], m["source"], m["targets"], m["rpo_objective_seconds"]] for m in scope["mirrors"]],
              [3 * cm, 5 * cm, 7.5 * cm, 2.5 * cm]),
        Paragraph("Summary", h2),
        table(["Figure", "Value"], [[SUMMARY_LABELS.get(k, k), v] for k, v in flatten(summary).items()],
              [10 * cm, 8 * cm]),
        Paragraph("RPO over the period", h2),
        Image(io.BytesIO(chart_png(data)), width=18 * cm, height=18 * cm * 2.8 / 7.2),
        Paragraph("Targets", h2),
        table(["Mirror", "Target", "Versions", "Within", "Late", "% within", "Worst RPO (s)", "Breaches",
               "In breach (s)"],
              [[t["mirror"], t["target"], t["replications"], t["within_objective"], t["late"],
                t["percent_within_objective"], t["worst_rpo_seconds"], t["breaches"], t["breach_seconds"]]
               for t in data["targets"]],
              [2 * cm, 5.4 * cm, 1.6 * cm, 1.4 * cm, 1.4 * cm, 1.5 * cm, 1.6 * cm, 1.5 * cm, 1.6 * cm], style=small),
        Paragraph("Breaches", h2),
    ]
    if not data["breaches"]:
        story.append(p("No breach of the objective in the period."))
    for b in data["breaches"]:
        listed = f" (the first {b['objects_listed']} listed)" if b["objects_listed"] < b["objects_affected"] else ""
        story += [
            Paragraph(f"Breach {b['number']}", h3),
            table(["Field", "Value"], [["Start (UTC)", b["start"]], ["End (UTC)", b["end"]],
                                       ["Duration (s)", b["duration_seconds"]], ["Peak RPO (s)", b["peak_rpo_seconds"]],
                                       ["Peak at (UTC)", b["peak_at"]],
                                       ["Open at the end of the period", b["open_at_end"]],
                                       ["Targets", b["targets"]], ["Objects affected", b["objects_affected"]]],
                  [6 * cm, 12 * cm]),
            Spacer(1, 4),
            p(f"Objects affected{listed}:", small),
            table(["Key", "Target", "Source write (UTC)", "Replicated (UTC)", "Pending (s)", "Status"],
                  [[o["key"], o["target"], o["source_time"], o["replicated_at"], o["pending_seconds"], o["status"]]
                   for o in b["objects"]],
                  [4.5 * cm, 3.5 * cm, 3.5 * cm, 3.5 * cm, 1.4 * cm, 1.6 * cm], style=tiny)]
    for title, rows in (("Failovers", data["failovers"]), ("Drills", data["drills"])):
        story.append(Paragraph(title, h2))
        if not rows:
            story.append(p(f"No {title.lower()} in the period."))
        else:
            cols = list(rows[0])
            story.append(table(cols, [[r.get(c) for c in cols] for r in rows], style=small))
    story += [Spacer(1, 12),
              p(f"Data digest {digest}. This file is signed with Ed25519 by the deployment's report key {key_id} "
                "(signature after the end of the PDF); anyone with its public key can check it: "
                "cloudmirror report verify FILE --public-key PEM", small)]

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 6.5)
        canvas.drawString(doc.leftMargin, 0.8 * cm, f"{data['report']} - {scope['kind']} {scope['name']} - {digest}")
        canvas.drawRightString(A4[0] - doc.rightMargin, 0.8 * cm, f"page {doc.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=1.5 * cm, rightMargin=1.5 * cm, topMargin=1.8 * cm,
                            bottomMargin=1.8 * cm, title=f"{data['report']}: {scope['kind']} {scope['name']}",
                            author="cloudmirror", creator="cloudmirror",
                            subject=f"RPO {scope['kind']} {scope['name']} {period['since']} to {period['until']}",
                            keywords=[f"data_digest={digest}", f"key_id={key_id}"], invariant=1)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()
