"""DreamBooth as jobs: the subject's images stored beside the job, the run reporting its step,
newest sample grid and cancel through the store like a generation does, and the trained
LoRA (or model) copied into the models folder so every picker lists it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytorch_lightning as pl
from PIL import Image
from pydantic import ValidationError

from dreamloom.config import Settings
from dreamloom.jobs.events import JobEvents
from dreamloom.jobs.files import JobFiles
from dreamloom.jobs.model import Job, JobState
from dreamloom.jobs.reporting import JobReporter, describe
from dreamloom.jobs.store import JobStore, new_job_id
from dreamloom.models.registry import LORA_FOLDERS, ModelRegistry
from dreamloom.train.dreambooth.request import TrainingRequest

KIND = "train"
#: Inside a job's folder: the subject's images, and the run's own output folder.
INSTANCE_DIR = Path("inputs") / "instance"
RUN_DIR = "run"


class TrainingRefused(ValueError):
    """A training request that cannot run, and the field (``images``, a request field, or
    ``request`` for the prompts together) that says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class TrainingCancelled(Exception):
    """Raised inside the trainer when the job's cancel was requested."""


def destination(settings: Settings, request: TrainingRequest) -> Path:
    """Where the trained result goes: ``models/Lora/<name>`` or ``models/<name>``."""
    base = Path(settings.models_dir)
    return base / LORA_FOLDERS[0] / request.name if request.method == "lora" else base / request.name


def check_training(settings: Settings, request: TrainingRequest, images: list[Image.Image]) -> None:
    """Refuse, before queueing, what would fail later: too few images, a name in use, a base
    model that is not there, prompts the run configuration rejects (``TrainingRefused``)."""
    if not 1 <= len(images) <= 32:
        raise TrainingRefused("images", f"give 1 to 32 images of the subject (3-5 is typical), not {len(images)}")
    if destination(settings, request).exists():
        raise TrainingRefused("name", f"{request.name!r} is already in the models folder; choose another name")
    try:
        ModelRegistry(settings.models_dir).resolve(request.base_model)
    except ValueError as error:
        raise TrainingRefused("base_model", str(error)) from None
    try:
        request.to_config(Path("."), Path("."))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"])) or "request"
        raise TrainingRefused(where, first["msg"].removeprefix("Value error, ")) from None


def submit_training(store: JobStore, files: JobFiles, settings: Settings, request: TrainingRequest,
                    images: list[Image.Image], owner: str = "", max_queued: int | None = None,
                    origin: str = "api") -> Job:
    """Queue a DreamBooth run on ``images`` (stored with the job, so it survives a restart);
    ``origin`` records what submitted it."""
    check_training(settings, request, images)
    job_id = new_job_id()
    folder = files.folder(job_id) / INSTANCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.convert("RGB").save(folder / f"{i:02d}.png")
    try:
        return store.submit(KIND, {**request.model_dump(mode="json"), "origin": origin}, owner=owner,
                            max_queued=max_queued, job_id=job_id)
    except BaseException:
        files.remove(job_id)
        raise


class _JobHooks(pl.Callback):
    """Reports each optimizer step (with the newest sample grid as the preview) and stops
    the run when the job is cancelled."""

    def __init__(self, store: JobStore, job_id: str, samples: Path, publish) -> None:
        self.store, self.job_id, self.samples, self.publish = store, job_id, samples, publish
        self._grid: Path | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, *_) -> None:
        grids = sorted(self.samples.glob("step-*.png")) if self.samples.is_dir() else []
        preview = None
        if grids and grids[-1] != self._grid:
            self._grid = grids[-1]
            preview = grids[-1].read_bytes()
        self.store.progress(self.job_id, trainer.global_step, trainer.max_steps, preview)
        self.publish(self.job_id)
        job = self.store.get(self.job_id)
        if job is not None and job.cancel_requested:
            raise TrainingCancelled(self.job_id)


class TrainingRunner:
    """Runs claimed training jobs one at a time (the worker never batches them)."""

    def __init__(self, settings: Settings, store: JobStore, files: JobFiles, events: JobEvents | None = None):
        self.settings, self.store, self.files = settings, store, files
        self.report = JobReporter(store, events)

    def run(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._run_one(job)

    def _run_one(self, job: Job) -> None:
        from dreamloom.train.dreambooth.run import run_dreambooth  # Lightning's import is slow; only for training

        request = TrainingRequest.model_validate({k: v for k, v in job.request.items() if k != "origin"})
        folder = self.files.folder(job.id)
        entry = ModelRegistry(self.settings.models_dir).resolve(request.base_model)
        cfg = request.to_config(folder / INSTANCE_DIR, folder / RUN_DIR, entry.location)
        hooks = _JobHooks(self.store, job.id, cfg.output_dir / "samples", self.report.publish)
        try:
            # "latest": a job restarted after a crash continues from its newest checkpoint
            result = run_dreambooth(cfg, resume="latest", callbacks=[hooks])
            self._install(request, cfg.output_dir)
        except TrainingCancelled:
            self.report.finish(job, JobState.cancelled)
            return
        except Exception as error:
            self.report.finish(job, JobState.failed, error=describe(error))
            return
        outputs = {"installed": request.name, "method": request.method, "steps": result.steps if result else None,
                   "minutes": round(result.minutes, 3) if result else None}
        self.report.finish(job, JobState.done, result=outputs)

    def _install(self, request: TrainingRequest, run_dir: Path) -> None:
        """Copy the trained LoRA folder (or diffusers model folder) into the models folder."""
        source = run_dir / request.name if request.method == "lora" else run_dir / "pipeline"
        target = destination(self.settings, request)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)



def run_files(files: JobFiles, job_id: str) -> tuple[Path | None, list[Path]]:
    """A training job's loss chart (if drawn yet) and its sample grids, oldest first."""
    run_dir = files.folder(job_id) / RUN_DIR
    loss = run_dir / "loss.png"
    samples = sorted((run_dir / "samples").glob("step-*.png")) if (run_dir / "samples").is_dir() else []
    return (loss if loss.exists() else None), samples


