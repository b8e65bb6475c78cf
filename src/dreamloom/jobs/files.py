"""A job's files: its inputs (init image, mask) and its outputs, in one folder per job."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image


class JobFiles:
    """``root/<job id>/`` holds a job's outputs, ``root/<job id>/inputs/`` what it was given."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def save_input(self, job_id: str, name: str, image: Image.Image) -> None:
        folder = self.folder(job_id) / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{name}.png")

    def load_input(self, job_id: str, name: str) -> Image.Image | None:
        path = self.folder(job_id) / "inputs" / f"{name}.png"
        if not path.exists():
            return None
        with Image.open(path) as image:
            return image.copy()

    def output(self, job_id: str, name: str) -> Path | None:
        """An output file of the job by bare name, never a path outside its folder."""
        folder = self.folder(job_id)
        if Path(name).name != name or name.startswith("."):
            return None
        path = folder / name
        return path if path.is_file() else None

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
