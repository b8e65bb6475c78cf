"""A job's progress as the page shows it: a bar with step, percentage and ETA, and the job's
state and id as data attributes (what a person reads, and what the browser tests check)."""

from __future__ import annotations

import html

from PIL import Image

from dreamloom.images import decode_image
from dreamloom.jobs.model import Job, JobState

CSS = """
.dl-progress { font-family: system-ui, sans-serif; font-size: 0.9em; }
.dl-bar { height: 10px; border-radius: 5px; background: var(--neutral-200, #e5e7eb); overflow: hidden; margin: 4px 0; }
.dl-fill { height: 100%; background: var(--color-accent, #f97316); transition: width 0.2s; }
.dl-progress[data-state="failed"] .dl-fill { background: #dc2626; }
.dl-progress[data-state="cancelled"] .dl-fill { background: #6b7280; }
"""

_LABELS = {JobState.queued: "Queued", JobState.running: "Running", JobState.done: "Done",
           JobState.failed: "Failed", JobState.cancelled: "Cancelled"}


def progress_html(job: Job | None, unit: str = "Step") -> str:
    """The bar for ``job`` (an empty idle bar for None)."""
    if job is None:
        return '<div class="dl-progress" data-state="idle" data-step="0" data-total="0"></div>'
    percent = 100.0 if job.state == JobState.done else 100.0 * job.progress
    parts = [_LABELS[job.state]]
    if job.total:
        parts.append(f"{unit} {job.step}/{job.total}")
    parts.append(f"{percent:.0f} %")
    eta = job.eta_seconds()
    if eta is not None:
        parts.append(f"ETA {eta:.1f} s")
    if job.error:
        parts.append(job.error)
    text = html.escape(" · ".join(parts))
    return (f'<div class="dl-progress" data-job="{job.id}" data-state="{job.state.value}" data-step="{job.step}" '
            f'data-total="{job.total}"><div class="dl-bar"><div class="dl-fill" style="width: {percent:.1f}%">'
            f'</div></div><span class="dl-text">{text}</span></div>')


def preview_image(data: bytes | None) -> Image.Image | None:
    return decode_image(data, "the preview") if data else None
