"""Training curves kept as JSON lines beside the checkpoints and redrawn as PNG charts.

A JSON-lines file survives an interrupted run, so a resumed run's chart shows the whole
history; the PNG is what a person opens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from dreamloom.plots import plot_curves


def drop_after(path: Path, step: int) -> None:
    """Forget the records of ``path`` past ``step``: a run resumed from ``step`` redraws
    them, and an interrupted run may have written some after its last checkpoint."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def measurement_due(trainer: pl.Trainer, every: int) -> bool:
    """True at every ``every``-th optimizer step and at the last one, when a curve gets a point."""
    return trainer.global_step % every == 0 or trainer.global_step == trainer.max_steps


def append_and_plot(path: Path, record: dict, title: str, ylabel: str, log_y: bool = False) -> None:
    """Append ``record`` (a ``step`` and numbers, one level of nesting allowed) to the JSON-lines
    file ``path`` and redraw ``path`` with suffix ``.png`` from every record in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in records:
        for key, value in row.items():
            if isinstance(value, dict):  # e.g. {"1-object": {"correct": 0.6, ...}}: plot "correct"
                value = value.get("correct")
            if key != "step" and isinstance(value, (int, float)):
                curves.setdefault(key, []).append((row["step"], float(value)))
    plot_curves(curves, path.with_suffix(".png"), title, ylabel, log_y)


class LossCurve(pl.Callback):
    """Every ``every`` steps, record the mean of the logged ``metric`` since the last record."""

    def __init__(self, path: Path, metric: str, every: int = 50):
        self.path, self.metric, self.every = Path(path), metric, every
        self._values: list[float] = []
        self._recorded_step = 0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._recorded_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:  # one writer per file under DDP
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is not None:
            self._values.append(float(value))
        # with gradient accumulation several batches end at one step: record it once
        if self._values and measurement_due(trainer, self.every) and trainer.global_step != self._recorded_step:
            self._recorded_step = trainer.global_step
            mean = sum(self._values) / len(self._values)
            self._values.clear()
            append_and_plot(self.path, {"step": trainer.global_step, "loss": mean}, f"{self.metric} (mean of {self.every} steps)",
                            "loss", log_y=True)
