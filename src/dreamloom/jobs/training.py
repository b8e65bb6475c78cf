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
from dreamloom.errors import field_message
from dreamloom.jobs.lease import Claim
from dreamloom.jobs.model import Job, JobState, describe
from dreamloom.jobs.store import JobStore
from dreamloom.models.registry import LORA_FOLDERS, ModelRegistry
from dreamloom.train.dreambooth.request import TrainingRequest

KIND = "train"
#: Inside a job's work folder: the subject's images, and the run's own output folder.
INSTANCE_DIR = "instance"
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
        ModelRegistry.of(settings).resolve(request.base_model)
    except ValueError as error:
        raise TrainingRefused("base_model", str(error)) from None
    try:
        request.to_config(Path("."), Path("."))
    except ValidationError as error:
        where, message = field_message(error)
        raise TrainingRefused(where or "request", message) from None


def submit_training(store: JobStore, settings: Settings, request: TrainingRequest, images: list[Image.Image],
                    owner: str = "", max_queued: int | None = None, origin: str = "api",
                    max_owner_queued: int | None = None) -> Job:
    """Queue a DreamBooth run on ``images`` (stored with the job, so it survives a restart);
    ``origin`` records what submitted it."""
    check_training(settings, request, images)
    inputs = {f"instance-{i:02d}": image.convert("RGB") for i, image in enumerate(images)}
    return store.submit(KIND, {**request.model_dump(mode="json"), "origin": origin}, owner=owner,
                        max_queued=max_queued, inputs=inputs, max_owner_queued=max_owner_queued)


class _JobHooks(pl.Callback):
    """Reports each optimizer step (with the newest sample grid as the preview) and stops
    the run when the job is cancelled (or its lease lost: the claim's ``cancel``)."""

    def __init__(self, claim: Claim, samples: Path) -> None:
        self.claim, self.samples = claim, samples
        self._grid: Path | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, *_) -> None:
        grids = sorted(self.samples.glob("step-*.png")) if self.samples.is_dir() else []
        preview = None
        if grids and grids[-1] != self._grid:
            self._grid = grids[-1]
            preview = grids[-1].read_bytes()
        self.claim.progress(trainer.global_step, trainer.max_steps, preview)
        if self.claim.cancel.is_set():
            raise TrainingCancelled(self.claim.id)


class TrainingRunner:
    """Runs claimed training jobs one at a time (the worker never batches them)."""

    def __init__(self, settings: Settings, store: JobStore):
        self.settings, self.store = settings, store

    def run(self, claims: list[Claim]) -> None:
        for claim in claims:
            self._run_one(claim)

    def _run_one(self, claim: Claim) -> None:
        from dreamloom.train.dreambooth.run import run_dreambooth  # Lightning's import is slow; only for training

        job = claim.job
        request = TrainingRequest.model_validate({k: v for k, v in job.request.items() if k != "origin"})
        instance = self._instance_images(job.id)
        entry = ModelRegistry.of(self.settings).resolve(request.base_model)
        cfg = request.to_config(instance, self.store.blobs.work_dir(job.id) / RUN_DIR, entry.location)
        try:
            # "latest": a job restarted after a crash continues from its newest checkpoint
            result = run_dreambooth(cfg, resume="latest", callbacks=[_JobHooks(claim, cfg.output_dir / "samples")])
            self._install(request, cfg.output_dir)
        except TrainingCancelled:
            claim.finish(JobState.cancelled)
            return
        except Exception as error:
            claim.finish(JobState.failed, error=describe(error))
            return
        outputs = {"installed": request.name, "method": request.method, "steps": result.steps if result else None,
                   "minutes": round(result.minutes, 3) if result else None}
        claim.finish(JobState.done, result=outputs)

    def _instance_images(self, job_id: str) -> Path:
        """The subject's images as the trainer reads them: files in a folder of the job's work dir."""
        folder = self.store.blobs.work_dir(job_id) / INSTANCE_DIR
        folder.mkdir(exist_ok=True)
        for name in self.store.blobs.inputs(job_id):
            if not (path := folder / f"{name}.png").exists():
                self.store.blobs.load_input(job_id, name).save(path)
        return folder

    def _install(self, request: TrainingRequest, run_dir: Path) -> None:
        """Copy the trained LoRA folder (or diffusers model folder) into the models folder."""
        source = run_dir / request.name if request.method == "lora" else run_dir / "pipeline"
        target = destination(self.settings, request)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)


def run_files(store: JobStore, job_id: str) -> tuple[Path | None, list[Path]]:
    """A training job's loss chart (if drawn yet) and its sample grids, oldest first."""
    run_dir = store.blobs.work_dir(job_id) / RUN_DIR
    loss = run_dir / "loss.png"
    samples = sorted((run_dir / "samples").glob("step-*.png")) if (run_dir / "samples").is_dir() else []
    return (loss if loss.exists() else None), samples
