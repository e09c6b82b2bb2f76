"""What the Details pane says about a case: rows about its last run and notes to heed.

Plain functions over ``run.json`` data and QA records, so the window only puts them together.
"""

from __future__ import annotations

from typing import Any

from app.core.qa_store import QaRecord

STALE_RESULT = (
    "The input files changed after this result was generated: it was made from other inputs."
    " Run the case again before approving it."
)

Rows = list[tuple[str, str]]


def run_rows(info: dict[str, Any] | None) -> Rows:
    """When the shown result was made, by which models and providers, its size and run time."""
    if not info:
        return []
    rows = [
        ("Last run", str(info.get("time", "")).replace("T", " ")[:19]),
        (
            "Models",
            f"{info.get('crown_model')} v{info.get('crown_version')}, "
            f"{info.get('seg_model')} v{info.get('seg_version')}",
        ),
        ("Providers", ", ".join(info.get("providers", []))),
    ]
    crown = info.get("crown") or {}
    if crown:
        rows.append(("Crown", f"{crown.get('faces')} triangles"))
    timings = info.get("timings_ms") or {}
    total = sum(v for v in timings.values() if isinstance(v, int | float))
    if timings:
        rows.append(("Run time", f"{total / 1000:.1f} s"))
    return rows


def result_notes(
    info: dict[str, Any] | None, inputs_now: str | None, latest: QaRecord | None
) -> list[str]:
    """Warnings for the technician, most important first: a result or a decision made from
    other inputs than those on disk now (``inputs_now``), crown checks, model lint."""
    info = info or {}
    notes = [f"Check the crown: {w}" for w in info.get("warnings") or []]
    notes += [f"The model does not match its manifest: {w}" for w in info.get("model_lint") or []]
    if not inputs_now:
        return notes
    if latest is not None and latest.input_hash and latest.input_hash != inputs_now:
        notes.insert(
            0,
            f"The input files changed after the last decision ({latest.decision.value},"
            f" {latest.time[:19].replace('T', ' ')}): that decision judged other inputs.",
        )
    run_hash = info.get("input_hash")
    if run_hash and run_hash != inputs_now:
        notes.insert(0, STALE_RESULT)
    return notes


__all__ = ["STALE_RESULT", "result_notes", "run_rows"]
