"""A job's files: the inputs it was given (init image, mask, a subject's photos), the outputs
it made, and a scratch folder for a training run. The store owns them, so a front end asks the
store for a job's image and never builds a path from what a client sent.

Names are bare (``00000-42.png``): never a path, never hidden, so no name reaches outside the
job's own folder; job ids are alphanumeric for the same reason."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from PIL import Image


def is_bare(name: str) -> bool:
    """A file name that stays inside a folder: no separator, not ``.``/``..``, not hidden."""
    return bool(name) and Path(name).name == name and "\\" not in name and not name.startswith(".")


def checked(name: str) -> str:
    if not is_bare(name):
        raise ValueError(f"not a bare file name: {name!r}")
    return name


class BlobStore(ABC):
    """Where jobs' files live. ``local_root`` is the folder the paths this store hands out lie
    under (a web UI must be allowed to serve it); a remote store would cache into it."""

    local_root: Path

    @abstractmethod
    def put_output(self, job_id: str, name: str, data: bytes) -> None:
        """Store an output (overwriting one of that name). Raises ValueError for a name that is not bare."""

    @abstractmethod
    def get_output(self, job_id: str, name: str) -> bytes | None:
        """An output's bytes; None if there is none (or ``name`` is not bare)."""

    @abstractmethod
    def output_path(self, job_id: str, name: str) -> Path | None:
        """An output as a file on this host (for a file response or a gallery); None as ``get_output``."""

    @abstractmethod
    def save_input(self, job_id: str, name: str, image: Image.Image) -> None:
        """Keep an input image with the job, so the job survives a restart."""

    @abstractmethod
    def load_input(self, job_id: str, name: str) -> Image.Image | None: ...

    @abstractmethod
    def inputs(self, job_id: str) -> list[str]:
        """The names of the job's input images, sorted."""

    @abstractmethod
    def work_dir(self, job_id: str) -> Path:
        """A folder on this host for a running job's own files (a training run's checkpoints,
        samples, loss chart), kept so a restarted job resumes; created on first use."""

    @abstractmethod
    def remove(self, job_id: str) -> None:
        """Forget every file of the job."""


class LocalBlobs(BlobStore):
    """``root/<job id>/`` holds a job's outputs, ``inputs/`` what it was given (PNG) and
    ``work/`` its scratch folder."""

    def __init__(self, root: Path):
        self.local_root = Path(root)

    def _folder(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError(f"not a job id: {job_id!r}")
        return self.local_root / job_id

    def put_output(self, job_id: str, name: str, data: bytes) -> None:
        folder = self._folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / checked(name)).write_bytes(data)

    def output_path(self, job_id: str, name: str) -> Path | None:
        path = self._folder(job_id) / name
        return path if is_bare(name) and path.is_file() else None

    def get_output(self, job_id: str, name: str) -> bytes | None:
        path = self.output_path(job_id, name)
        return None if path is None else path.read_bytes()

    def save_input(self, job_id: str, name: str, image: Image.Image) -> None:
        folder = self._folder(job_id) / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{checked(name)}.png")

    def load_input(self, job_id: str, name: str) -> Image.Image | None:
        path = self._folder(job_id) / "inputs" / f"{name}.png"
        if not is_bare(name) or not path.is_file():
            return None
        with Image.open(path) as image:
            return image.copy()

    def inputs(self, job_id: str) -> list[str]:
        folder = self._folder(job_id) / "inputs"
        return sorted(path.stem for path in folder.glob("*.png")) if folder.is_dir() else []

    def work_dir(self, job_id: str) -> Path:
        folder = self._folder(job_id) / "work"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self._folder(job_id), ignore_errors=True)
