"""AUTOMATIC1111's web API (``/sdapi/v1``) over dreamloom's job queue, so A1111 clients
(webuiapi, editor plug-ins, chat front ends) work unchanged.

A txt2img or img2img call queues a job like any other and awaits it, so A1111 callers share
the queue, the batching, the limits and the owner scoping with dreamloom's own job API; the
handler never touches the engine. Fields A1111 clients send for features dreamloom lacks
(hires fix, face restoration, scripts, subseeds, tiling, ...) are accepted and ignored, as
A1111 itself ignores the settings of scripts it does not have. Bad input is a 422 naming the
A1111 field, never a failed job. ``/options`` changes the server's settings only for the
operator; anyone else's changes (the model webuiapi's ``util_set_model`` picks, clip skip)
are kept for that caller alone, and only the options dreamloom honours are kept at all.
"""

from __future__ import annotations

import base64
import json
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Depends, HTTPException
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from starlette.concurrency import run_in_threadpool

from dreamloom import __version__
from dreamloom.generate.infotext import parse_infotext
from dreamloom.generate.request import GenerationRequest
from dreamloom.generate.samplers import SAMPLERS
from dreamloom.jobs.model import Job, JobState
from dreamloom.models.loading import model_hash
from dreamloom.models.lora import weights_file
from dreamloom.models.registry import ModelEntry
from dreamloom.server import vision_api
from dreamloom.server.auth import Caller, StudioDep, caller
from dreamloom.service.errors import InvalidField
from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], dependencies=[Depends(caller)])

#: A1111's schedulers that dreamloom's sampler table can honour: name -> (label, default rho).
SCHEDULERS = {"automatic": ("Automatic", -1.0), "karras": ("Karras", 7.0)}
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")
#: Where each GenerationRequest field comes from in an A1111 request, for error locations.
_A1111_FIELD = {
    "sampler": ("sampler_name",),
    "model": ("override_settings", "sd_model_checkpoint"),
    "clip_skip": ("override_settings", "CLIP_stop_at_last_layers"),
    "init_image": ("init_images",),
}


class Txt2ImgRequest(BaseModel):
    """A1111's txt2img body. Defaults are A1111's; every other field A1111 clients send is
    accepted (``extra="allow"``), echoed back in ``parameters``, and otherwise ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(-1, description="-1 picks one at random.")
    sampler_name: str | None = Field(None, description="An A1111 sampler name (see /samplers).")
    sampler_index: str = Field("Euler", description="Older name of sampler_name, used when that is unset.")
    scheduler: str | None = Field(None, description='"automatic" (the sampler as named) or "karras".')
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int | None = Field(None, description="Omitted: the model's native width (512 for SD 1.x).")
    height: int | None = Field(None, description="Omitted: the model's native height.")
    override_settings: dict[str, Any] | None = Field(
        None, description="For this request only: sd_model_checkpoint, CLIP_stop_at_last_layers.")
    send_images: bool = True


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's img2img body: the first init image is redrawn, inside ``mask`` only if given."""

    init_images: list[str] | None = Field(None, description="Base64 images; dreamloom uses the first.")
    mask: str | None = Field(None, description="Base64 mask: white is redrawn (or its alpha, when it has one).")
    inpainting_mask_invert: int = Field(0, description="1: redraw the black part instead.")
    denoising_strength: float = 0.75
    mask_blur: int | None = Field(None, description="Blur of the mask edge in pixels (A1111's default: 4).")
    include_init_images: bool = False


class PngInfoRequest(BaseModel):
    image: str = Field(..., description="A base64 PNG, with or without a data: prefix.")


# --- models and samplers by their A1111 names -------------------------------------------------


@lru_cache(maxsize=256)
def _cached_hash(entry: ModelEntry, mtime_ns: int) -> str:
    """``model_hash`` reads every byte of the weights: once per file version is enough."""
    return model_hash(entry)


def _model_name(entry: ModelEntry) -> str:
    """A1111's ``model_name``: the path below the models folder without suffix, '/' as '_'."""
    name = entry.name.rsplit(".", 1)[0] if entry.path.is_file() else entry.name
    return name.replace("/", "_")


def _title(entry: ModelEntry) -> str:
    short = _cached_hash(entry, entry.path.stat().st_mtime_ns)
    return f"{entry.name} [{short}]" if short else entry.name


def _resolve_model(studio: Studio, value: str, field: tuple[str, ...]) -> str:
    """The registry name for an A1111 checkpoint value: a name, a ``model_name``, or a title
    ``"name [hash]"``; a 422 listing the models otherwise."""
    wanted = _HASH_SUFFIX.sub("", str(value))
    for entry in studio.models():
        if wanted in (entry.name, _model_name(entry)):
            return entry.name
    raise InvalidField(field, f"unknown model {value!r}; available: {', '.join(studio.model_names())}")


def _sampler(name: str, scheduler: str | None) -> str:
    """A1111 1.9+ names the sampler and its schedule apart ("DPM++ 2M" + "karras"); dreamloom's
    table has the older joined names ("DPM++ 2M Karras")."""
    labels = {key: key for key in SCHEDULERS} | {label.lower(): key for key, (label, _) in SCHEDULERS.items()}
    key = labels.get((scheduler or "automatic").lower())
    if key is None:
        raise InvalidField("scheduler", f"unknown scheduler {scheduler!r}; available: {', '.join(SCHEDULERS)}")
    if key == "karras" and name in SAMPLERS and not name.endswith(" Karras"):
        if f"{name} Karras" not in SAMPLERS:
            karras = ", ".join(n.removesuffix(" Karras") for n in SAMPLERS if n.endswith(" Karras"))
            raise InvalidField("scheduler", f"{name!r} has no Karras schedule here; samplers with one: {karras}")
        return f"{name} Karras"
    return name


# --- generation ---------------------------------------------------------------------------------


def _mask(studio: Studio, data: str, invert: bool) -> Image.Image:
    """A1111's mask rule: a mask with transparency is its alpha channel, any other its luminance."""
    mask = studio.policy.image(data, "mask")
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        mask = mask.getchannel("A")
    mask = mask.convert("L")
    return ImageOps.invert(mask) if invert else mask


def _generation_request(body: Txt2ImgRequest, studio: Studio, principal: Principal) -> GenerationRequest:
    """The dreamloom request an A1111 body asks for; a 422 naming the A1111 field if it is bad."""
    overrides = body.override_settings or {}
    preferences = studio.preferences_of(principal)
    model = preferences.model
    if overrides.get("sd_model_checkpoint"):
        model = _resolve_model(studio, overrides["sd_model_checkpoint"], ("override_settings", "sd_model_checkpoint"))
    values: dict[str, Any] = {
        "prompt": body.prompt, "negative_prompt": body.negative_prompt, "model": model,
        "sampler": _sampler(body.sampler_name or body.sampler_index, body.scheduler),
        "steps": body.steps, "cfg_scale": body.cfg_scale, "seed": body.seed, "width": body.width,
        "height": body.height, "batch_size": body.batch_size, "n_iter": body.n_iter,
        "clip_skip": overrides.get("CLIP_stop_at_last_layers", preferences.clip_skip),
        "enhance": (body.model_extra or {}).get("enhance", False),  # dreamloom's own field, riding along
    }
    if isinstance(body, Img2ImgRequest):
        if not body.init_images:
            raise InvalidField("init_images", "img2img needs an init image")
        values["init_image"] = studio.policy.image(body.init_images[0], "init_images")
        values["denoising_strength"] = body.denoising_strength
        if body.mask:  # A1111 treats an empty mask as none
            values["mask"] = _mask(studio, body.mask, invert=body.inpainting_mask_invert == 1)
            values["mask_blur"] = 4 if body.mask_blur is None else body.mask_blur
    try:
        return GenerationRequest(**values)
    except ValidationError as error:
        raise InvalidField.from_validation(error, rename=_A1111_FIELD) from None


def _info(request: GenerationRequest, job: Job) -> str:
    """A1111's ``info`` (its ``Processed.js()``): the values the images were really drawn with."""
    seeds, infotexts = job.result.get("seeds", []), job.result.get("infotexts", [])
    fields = parse_infotext(infotexts[0]) if infotexts else {}
    width, _, height = fields.get("Size", "").partition("x")
    count = len(seeds)
    return json.dumps({
        "prompt": request.prompt, "all_prompts": [request.prompt] * count,
        "negative_prompt": request.negative_prompt, "all_negative_prompts": [request.negative_prompt] * count,
        "seed": job.request["seed"], "all_seeds": seeds,
        "subseed": -1, "all_subseeds": [-1] * count, "subseed_strength": 0,  # dreamloom draws no subseed noise
        "width": int(width) if width else request.width, "height": int(height) if height else request.height,
        "sampler_name": request.sampler, "cfg_scale": request.cfg_scale, "steps": request.steps,
        "batch_size": request.batch_size, "n_iter": request.n_iter, "clip_skip": request.clip_skip,
        "restore_faces": False, "styles": [],
        "denoising_strength": request.denoising_strength if request.init_image is not None else None,
        "sd_model_name": request.model, "sd_model_hash": fields.get("Model hash"),
        "extra_generation_params": {k: fields[k] for k in ("Mask blur", "Lora hashes") if k in fields},
        "index_of_first_image": 0,  # no grid image is prepended
        "infotexts": infotexts, "interrupted": bool(job.result.get("interrupted")),
        "job_timestamp": _timestamp(job.started), "version": f"dreamloom {__version__}",
    })


def _response(body: Txt2ImgRequest, request: GenerationRequest, job: Job, studio: Studio,
              principal: Principal) -> dict:
    if job.state == JobState.failed:
        raise HTTPException(500, job.error or "the generation failed")
    if job.state == JobState.cancelled:
        raise HTTPException(409, f"job {job.id} was cancelled (through dreamloom's job API) before it finished")
    parameters = body.model_dump()
    if isinstance(body, Img2ImgRequest) and not body.include_init_images:
        parameters["init_images"] = parameters["mask"] = None
    images = studio.images_b64(principal, job) if body.send_images else []
    return {"images": images, "parameters": parameters, "info": _info(request, job)}


async def _generate(body: Txt2ImgRequest, principal: Principal, studio: Studio) -> dict:
    """Queue the job and await it; decoding, queueing and reading the files run in threads,
    so the event loop keeps serving /progress and /interrupt meanwhile."""
    request = await run_in_threadpool(_generation_request, body, studio, principal)
    job = await run_in_threadpool(studio.submit, principal, request, "a1111")
    job = await studio.wait(principal, job.id)
    return await run_in_threadpool(_response, body, request, job, studio, principal)


@router.post("/txt2img", summary="Text to image (waits for the images)")
async def txt2img(body: Txt2ImgRequest, principal: Caller, studio: StudioDep) -> dict:
    return await _generate(body, principal, studio)


@router.post("/img2img", summary="Image to image, or inpainting with a mask (waits for the images)")
async def img2img(body: Img2ImgRequest, principal: Caller, studio: StudioDep) -> dict:
    return await _generate(body, principal, studio)


# --- progress and stopping ----------------------------------------------------------------------


def _timestamp(when: float | None) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(when)) if when else "0"


@router.get("/progress", summary="The caller's newest running job: progress, ETA, preview")
def progress(principal: Caller, studio: StudioDep, skip_current_image: bool = False) -> dict:
    most = studio.config.limits.max_queue
    running = studio.jobs(principal, JobState.running, limit=most)
    queued = studio.jobs(principal, JobState.queued, limit=most)
    job = running[0] if running else None
    state = {"skipped": False, "interrupted": False, "job": "", "job_count": len(running) + len(queued),
             "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if job is None:
        textinfo = f"{len(queued)} job(s) waiting in the queue" if queued else None
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": textinfo}
    state |= {"skipped": job.skip_requested, "interrupted": job.interrupt_requested, "job": job.id,
              "job_timestamp": _timestamp(job.started), "sampling_step": job.step, "sampling_steps": job.total}
    preview = None if skip_current_image else studio.preview(principal, job.id)
    return {"progress": job.progress, "eta_relative": job.eta_seconds() or 0.0, "state": state,
            "current_image": base64.b64encode(preview).decode() if preview else None, "textinfo": None}


@router.post("/interrupt", summary="Stop the caller's running jobs now, keeping what is drawn")
def interrupt(principal: Caller, studio: StudioDep) -> dict:
    studio.interrupt(principal)
    return {}


@router.post("/skip", summary="Drop the current batch of the caller's running jobs and go on")
def skip(principal: Caller, studio: StudioDep) -> dict:
    studio.interrupt(principal, skip=True)
    return {}


# --- options and listings -----------------------------------------------------------------------


#: The A1111 options dreamloom honours, and the preference each one sets.
_OPTIONS = {"sd_model_checkpoint": "model", "CLIP_stop_at_last_layers": "clip_skip"}


@router.get("/options", summary="The settings A1111 clients read (the current model first of all)")
def get_options(principal: Caller, studio: StudioDep) -> dict:
    preferences = studio.preferences_of(principal)
    current = next((e for e in studio.models() if e.name == preferences.model), None)
    return {"samples_format": "png", "CLIP_stop_at_last_layers": preferences.clip_skip,
            "sd_model_checkpoint": _title(current) if current else preferences.model}


@router.post("/options", summary="Change settings: the server's for the operator, the caller's own for anyone else")
def set_options(body: dict[str, Any], principal: Caller, studio: StudioDep) -> None:
    """``sd_model_checkpoint`` picks the default model, ``CLIP_stop_at_last_layers`` the clip skip;
    options dreamloom has no use for are accepted and not kept (A1111 ignores unknown ones too)."""
    if body.get("samples_format", "png") != "png":
        raise InvalidField("samples_format", "dreamloom writes PNG only")
    values = {preference: body[option] for option, preference in _OPTIONS.items() if option in body}
    if "model" in values:
        values["model"] = _resolve_model(studio, values["model"], ("sd_model_checkpoint",))
    try:
        studio.set_preferences(principal, server_wide=principal.operator, **values)
    except InvalidField as error:
        names = {preference: (option,) for option, preference in _OPTIONS.items()}
        raise InvalidField(names.get(error.problems[0].loc[0], error.problems[0].loc), error.problems[0].msg) from None


@router.get("/sd-models", summary="The models, as A1111 lists checkpoints")
def sd_models(studio: StudioDep) -> list[dict]:
    return [{"title": _title(e), "model_name": _model_name(e), "hash": _cached_hash(e, e.path.stat().st_mtime_ns),
             "sha256": None, "filename": studio.shown(e), "config": None}  # the short hash only
            for e in studio.models()]


@router.post("/refresh-checkpoints", summary="Rescan the models folder (every listing rescans it anyway)")
def refresh_checkpoints() -> None:
    return None


@router.get("/samplers", summary="dreamloom's samplers, by their A1111 names")
def samplers() -> list[dict]:
    return [{"name": name, "aliases": [],
             "options": {"scheduler": "karras"} if sampler.options.get("use_karras_sigmas") else {}}
            for name, sampler in SAMPLERS.items()]


@router.get("/schedulers", summary="The schedules a sampler name can be joined with")
def schedulers() -> list[dict]:
    return [{"name": name, "label": label, "aliases": None, "default_rho": rho, "need_inner_model": False}
            for name, (label, rho) in SCHEDULERS.items()]


@router.get("/upscalers", summary="A1111's built-in upscalers (dreamloom has no upscaler models)")
def upscalers() -> list[dict]:
    return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
            for name in ("None", "Lanczos", "Nearest")]


def _lora_metadata(path: Path) -> dict:
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as weights:
            return weights.metadata() or {}
    except (OSError, SafetensorError):
        return {}


@router.get("/loras", summary="The LoRAs, usable in a prompt as <lora:name:weight>")
def loras(studio: StudioDep) -> list[dict]:
    found = []
    for entry in studio.loras():
        path = weights_file(entry)
        name = _model_name(entry)
        found.append({"name": name, "alias": name, "path": studio.shown(entry), "metadata": _lora_metadata(path)})
    return found


@router.get("/scripts", summary="A1111 scripts: dreamloom has none")
def scripts() -> dict:
    return {"txt2img": [], "img2img": []}


@router.get("/cmd-flags", summary="How this server was started (credentials never shown)")
def cmd_flags(studio: StudioDep) -> dict:
    config, settings = studio.config, studio.settings
    return {"api": True, "nowebui": True, "api_auth": bool(config.users), "api_keys": bool(config.api_keys),
            "listen": config.host not in ("127.0.0.1", "localhost", "::1"), "server_name": config.host,
            "port": config.port, "ckpt_dir": str(settings.models_dir), "data_dir": str(config.data_dir),
            "device": settings.device, "dtype": settings.dtype, "disable_safe_unpickle": settings.allow_pickle,
            "batch_size": config.batch_size, "preview_every": config.preview_every}


def _ram() -> dict:
    """System RAM in bytes: psutil where it is installed, /proc/meminfo otherwise."""
    try:
        import psutil
    except ImportError:
        try:
            lines = Path("/proc/meminfo").read_text().splitlines()
            fields = {key: int(value.split()[0]) * 1024 for key, _, value in (line.partition(":") for line in lines)}
            total, free = fields["MemTotal"], fields["MemAvailable"]
        except (OSError, KeyError, ValueError) as error:
            return {"error": f"RAM use unknown ({type(error).__name__})"}
    else:
        memory = psutil.virtual_memory()
        total, free = memory.total, memory.available
    return {"free": free, "used": total - free, "total": total}


def _cuda() -> dict:
    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    free, total = torch.cuda.mem_get_info()
    return {"system": {"free": free, "used": total - free, "total": total},
            "allocated": {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()},
            "reserved": {"current": torch.cuda.memory_reserved(), "peak": torch.cuda.max_memory_reserved()}}


@router.get("/memory", summary="RAM and CUDA memory in bytes")
def memory() -> dict:
    return {"ram": _ram(), "cuda": _cuda()}


@router.post("/png-info", summary="The generation parameters a PNG carries")
def png_info(body: PngInfoRequest, studio: StudioDep) -> dict:
    image = studio.policy.image(body.image.strip(), "image")
    items = {key: value for key, value in image.info.items() if isinstance(value, str)}
    info = items.pop("parameters", "")
    parameters: dict[str, str] = parse_infotext(info) if info else {}
    if "x" in parameters.get("Size", ""):  # A1111 also gives the size's parts
        parameters["Size-1"], _, parameters["Size-2"] = parameters["Size"].partition("x")
    return {"info": info, "items": items, "parameters": parameters}


class InterrogateRequest(BaseModel):
    image: str = Field("", description="The image, base64 PNG or JPEG.")
    model: str = Field("clip", description="A vision model; A1111's clip and deepdanbooru mean the default one.")


@router.post("/interrogate", summary="Caption an image with the vision model")
async def interrogate(body: InterrogateRequest, principal: Caller, studio: StudioDep) -> dict:
    return {"caption": await vision_api.caption_b64(studio, principal, body.image, body.model)}
