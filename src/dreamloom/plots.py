"""Line charts of training curves as PNG files: people look at a loss curve, they do not read one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, safe in servers and worker threads

import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: Path,
    title: str,
    ylabel: str,
    log_y: bool = False,
) -> Path:
    """Draw each named series of (step, value) points on one chart and save it as ``path``."""
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, points in curves.items():
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, label=name, marker="o" if len(points) < 30 else None)
    axes.set(title=title, xlabel="step", ylabel=ylabel)
    if log_y:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if len(curves) > 1:
        axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
