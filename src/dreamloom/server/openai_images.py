"""OpenAI-compatible image API (``/v1/images/generations``, ``/v1/images/edits``, ``/v1/models``),
so the official ``openai`` client, and the tools built on it, draw with dreamloom's models.

OpenAI's parameters that mean nothing here (``quality``, ``style``, ``user``, ``background``,
``output_format``, ...) are accepted and ignored; dreamloom's own (``steps``, ``seed``, ...) ride
along in the body, which the client sends with ``extra_body``. Requests go through the job queue
like every other API's, then the handler waits for the job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import FormData, UploadFile

from dreamloom.generate.request import GenerationRequest
from dreamloom.jobs.model import Job, JobState
from dreamloom.models.registry import ModelEntry
from dreamloom.server.auth import Caller, StudioDep, caller
from dreamloom.server.errors import to_http
from dreamloom.service.errors import InvalidField, ServiceError
from dreamloom.service.principals import Principal
from dreamloom.service.studio import Studio
from dreamloom.vision.registry import VisionModelEntry


def _openai_error(status: int, errors: list | str, headers: dict | None = None) -> JSONResponse:
    """OpenAI's error body: the openai client puts ``message`` in its exception's text and
    ``param`` on the exception, where FastAPI's ``detail`` would leave only the status code."""
    if isinstance(errors, str):
        errors = [{"loc": (), "msg": errors}]
    fields = [".".join(str(part) for part in e["loc"] if part != "body") for e in errors]
    message = "; ".join(f"{field}: {e['msg']}" if field else e["msg"] for field, e in zip(fields, errors))
    error = {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
             "param": next((field for field in fields if field), None), "code": None}
    return JSONResponse({"error": error}, status, headers)


class OpenAIErrorRoute(APIRoute):
    """A route that answers its refusals (validation, auth, limits) in OpenAI's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                return _openai_error(422, list(error.errors()))
            except (HTTPException, ServiceError) as error:
                http = to_http(error) if isinstance(error, ServiceError) else error
                detail = http.detail if isinstance(http.detail, list) else str(http.detail)
                return _openai_error(http.status_code, detail, http.headers)

        return handle


router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(caller)], route_class=OpenAIErrorRoute)

#: OpenAI's own model names; a client written for OpenAI sends one of these, and gets the server's default model.
OPENAI_MODEL_PREFIXES = ("dall-e-", "gpt-image-", "chatgpt-image-")
#: dreamloom's parameters a request may add to OpenAI's (validated by GenerationRequest, where their limits live).
EXTRAS = ("negative_prompt", "steps", "seed", "sampler", "cfg_scale", "clip_skip", "enhance")
#: ... and for edits, how much of the image is redrawn and how soft the mask's edge is.
EDIT_EXTRAS = (*EXTRAS, "denoising_strength", "mask_blur")
_SIZE = re.compile(r"^(\d+)x(\d+)$")

Params = TypeVar("Params", bound=BaseModel)


class ImageParams(BaseModel):
    """OpenAI's image parameters that dreamloom uses; any other field is accepted, and those
    named in ``EXTRAS`` are passed on to the generation request."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(..., description="What to draw (AUTOMATIC1111 prompt syntax works).")
    model: str | None = Field(None, description="A dreamloom model name; OpenAI's names (dall-e-3, gpt-image-1, "
                                                "...) and none mean the server's default model.")
    n: int = Field(1, ge=1, description="How many images, drawn as one batch.")
    size: str | None = Field(None, description="WIDTHxHEIGHT, multiples of 8; `auto` or none: the model's native "
                                               "size (for edits: the image's own size).")
    response_format: Literal["b64_json", "url"] | None = Field(
        None, description="Base64 PNG in the response (the default, as for GPT image models) or a URL to download "
                          "it (with the same credentials).")
    stream: bool = Field(False, description="Not supported: images come whole, in one response.")

    @field_validator("size")
    @classmethod
    def _size_is_width_x_height(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"expected WIDTHxHEIGHT such as 512x512, or auto; got {value!r}")
        if any(int(side) % 8 for side in match.groups()):
            raise ValueError(f"width and height must be multiples of 8, got {value}")
        return value

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, value: bool) -> bool:
        if value:
            raise ValueError("streaming is not supported; leave stream unset")
        return value

    def dimensions(self) -> tuple[int | None, int | None]:
        """(width, height), or (None, None) to let the engine pick its default."""
        if self.size is None or self.size == "auto":
            return None, None
        width, height = self.size.split("x")
        return int(width), int(height)


def _validated(model: type[Params], data: dict) -> Params:
    """``model`` from ``data``, refused as FastAPI refuses a bad body (422 naming the field), for
    the data a handler validates itself (a multipart form, the generation request built from it)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False, include_context=False)]
        ) from None


def _model_name(name: str | None, studio: Studio, principal: Principal) -> str:
    if name is None or (name.startswith(OPENAI_MODEL_PREFIXES) and name not in studio.model_names()):
        return studio.preferences_of(principal).model
    return name


def _generation_request(params: ImageParams, studio: Studio, principal: Principal, extras: tuple[str, ...],
                        **base) -> GenerationRequest:
    """The generation request for ``params``: ``base`` (images, defaults), then the request's ``extras``,
    then OpenAI's parameters translated."""
    limit = studio.config.limits.max_batch_size
    if params.n > limit:
        raise InvalidField("n", f"{params.n} is over this server's limit of {limit}")
    width, height = params.dimensions()
    passed = {name: value for name, value in (params.model_extra or {}).items() if name in extras}
    request = _validated(GenerationRequest, {
        **base, **passed, "prompt": params.prompt, "model": _model_name(params.model, studio, principal),
        "batch_size": params.n, "width": width, "height": height,
    })
    return studio.with_preferences(principal, request, {"model", *passed})


async def _respond(job: Job, params: ImageParams, request: Request, studio: Studio, principal: Principal) -> dict:
    """Wait for the job, then answer in the shape of OpenAI's ``ImagesResponse``."""
    finished = await studio.wait(principal, job.id)
    # the openai client retries 409 and 5xx unless told not to; a resubmitted job would only fail the same way
    no_retry = {"x-should-retry": "false"}
    if finished is None or finished.state == JobState.failed:
        raise HTTPException(500, f"generation failed: {finished.error if finished else 'job vanished'}", no_retry)
    if finished.state != JobState.done:
        raise HTTPException(409, f"job {job.id} was {finished.state.value} before it finished", no_retry)
    if params.response_format == "url":
        data = [{"url": str(request.url_for("job_file", job_id=job.id, name=name))}
                for name in finished.result.get("files", [])]
    else:
        data = [{"b64_json": image} for image in studio.images_b64(principal, finished)]
    return {"created": int(finished.finished or finished.created), "data": data, "output_format": "png"}


@router.post("/images/generations", summary="Create images from a prompt (OpenAI-compatible)")
async def create_images(params: ImageParams, request: Request, principal: Caller, studio: StudioDep) -> dict:
    job = studio.submit(principal, _generation_request(params, studio, principal, EXTRAS), origin="openai")
    return await _respond(job, params, request, studio, principal)


def _open_image(upload: object, field: str, studio: Studio) -> Image.Image:
    """The uploaded image; a 422 naming ``field`` when it is not a file, not an image or too large."""
    if not isinstance(upload, UploadFile):
        raise InvalidField(field, "must be an uploaded image file")
    return studio.policy.image(upload.file.read(), field)


def _the_image(form: FormData, studio: Studio) -> Image.Image:
    """The one image to edit: the client sends ``image``, or ``image[]`` when given a list."""
    uploads = [*form.getlist("image"), *form.getlist("image[]")]
    if len(uploads) != 1:
        raise InvalidField("image", f"send exactly one image to edit, got {len(uploads)}")
    return _open_image(uploads[0], "image", studio)


def _transparency(image: Image.Image) -> Image.Image | None:
    """The alpha channel when some pixel is not fully opaque, else None."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None


def _redraw_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image | None:
    """dreamloom's inpaint mask (white: redraw) from OpenAI's convention, where the transparent
    pixels of the mask, or of the image when no mask is sent, mark what to edit. A mask with no
    transparency is read as dreamloom's own (white: redraw). None: nothing is marked, so the
    edit is img2img of the whole image."""
    if mask is not None:
        alpha = _transparency(mask)
        return mask.convert("L") if alpha is None else alpha.point(lambda a: 255 - a)
    alpha = _transparency(image)
    return None if alpha is None else alpha.point(lambda a: 255 - a)


_EDIT_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "prompt"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "The image to edit (also accepted as image[])."},
        "mask": {"type": "string", "format": "binary",
                 "description": "Transparent pixels mark what to redraw; without transparency, white does."},
        **ImageParams.model_json_schema()["properties"],
    },
}}}}}


@router.post("/images/edits", summary="Edit an image: inpaint the masked part, or img2img (OpenAI-compatible)",
             openapi_extra=_EDIT_SCHEMA)
async def edit_images(request: Request, principal: Caller, studio: StudioDep) -> dict:
    async with request.form() as form:
        params = _validated(ImageParams, {name: value for name, value in form.multi_items() if isinstance(value, str)})
        image = _the_image(form, studio)
        mask = _open_image(form["mask"], "mask", studio) if "mask" in form else None
    base: dict = {"init_image": image.convert("RGB")}
    if (redraw := _redraw_mask(image, mask)) is not None:
        # OpenAI redraws the marked part from scratch (its pixels are often erased): strength 1 unless asked otherwise
        base |= {"mask": redraw, "denoising_strength": 1.0}
    job = studio.submit(principal, _generation_request(params, studio, principal, EDIT_EXTRAS, **base),
                        origin="openai")
    return await _respond(job, params, request, studio, principal)


def _model_card(entry: ModelEntry | VisionModelEntry) -> dict:
    """A registry model as OpenAI lists one; ``created`` is when its files were written."""
    created = int(entry.path.stat().st_mtime) if entry.path.exists() else 0
    return {"id": entry.name, "object": "model", "created": created, "owned_by": "dreamloom"}


def _entries(studio: Studio) -> list[ModelEntry | VisionModelEntry]:
    """The models drawn with (images API), then those that look (chat completions)."""
    return [*studio.models(), *studio.vision.local.models()]


@router.get("/models", summary="The models this server draws and looks with (OpenAI-compatible)")
async def list_models(studio: StudioDep) -> dict:
    return {"object": "list", "data": [_model_card(entry) for entry in _entries(studio)]}


@router.get("/models/{model_id:path}", summary="One model (OpenAI-compatible)")
async def get_model(model_id: str, studio: StudioDep) -> dict:
    for entry in _entries(studio):
        if entry.name == model_id:
            return _model_card(entry)
    raise HTTPException(404, f"no model {model_id!r}; available: {', '.join(e.name for e in _entries(studio))}")
