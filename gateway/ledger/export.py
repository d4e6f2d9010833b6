"""A person's evidence trail as CSV: one row per event, oldest first."""

from __future__ import annotations

import csv
import io


def trail_csv(trail: dict) -> str:
    """One row per event (evidence, opt-out/opt-in, decision), oldest first."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["time", "kind", "id", "org", "channel", "detail", "reason", "message_id",
                "evidence_id", "ruleset", "region", "region_source"])
    rows = []
    for e in trail["evidence"]:
        rows.append([e["obtained_at"], "evidence", e["id"], e["org"], e["channel"],
                     f"{e['basis']} via {e['source']}", "", "", "", "", e.get("region") or "",
                     ""])
    for o in trail["opt_outs"]:
        rows.append([o["at"], o["kind"], o["id"], o["org"], o["channel"],
                     f"{o['method']} {o['source']}".strip() + _scope(o), "",
                     o["message_id"] or "", "", "", "", ""])
    for d in trail["decisions"]:
        rows.append([d["at"], "decision", d["id"], d["org"], d["channel"], d["outcome"],
                     d["reason"], d["message_id"] or "", d["evidence_id"] or "",
                     d.get("ruleset") or "", d.get("region") or "", d.get("region_source") or ""])
    for x in trail.get("erasures", ()):
        rows.append([x["at"], "erasure", x["id"], x["org"], x["channel"], x["source"], "", "",
                     "", "", "", ""])
    for row in sorted(rows, key=lambda r: r[0]):
        w.writerow(row)
    return out.getvalue()


def _scope(opt_out: dict) -> str:
    """" (categories: a, b)" for an opt-out scoped in the preference centre."""
    categories = opt_out.get("categories") or []
    return f" (categories: {', '.join(categories)})" if categories else ""
