"""``dreamloom``: generate images, inspect them, manage and export models, train, evaluate."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dreamloom.cli.options import ENGINE_SETTINGS, Renamed, with_model_options, with_settings_options
from dreamloom.cli.vision import enhance_prompt, register as register_vision_commands
from dreamloom.cli.vlm import register as register_vlm_commands
from dreamloom.config import Settings
from dreamloom.errors import one_line
from dreamloom.generate.lora_syntax import parse_lora
from dreamloom.generate.request import GenerationRequest
from dreamloom.service.errors import ServiceError
from dreamloom.service.local import LocalStudio
from dreamloom.serving.config import ServerConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
train_app = typer.Typer(no_args_is_help=True, help="Train models.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure models.")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
console = Console()
errors = Console(stderr=True)


def _fail(message: str) -> None:
    # emoji=False: a message quoting a value such as 'a:b:c' must not grow an emoji
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)
    raise typer.Exit(2)


def friendly_errors(fn):
    """Turn expected failures into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValidationError as error:
            _fail(one_line(error))
        except ServiceError as error:
            _fail(error.message)
        except (ValueError, FileNotFoundError, OSError) as error:
            _fail(str(error))

    return wrapper


def _open_image(path: Path | None):
    from PIL import Image

    if path is None:
        return None
    if not path.exists():
        raise FileNotFoundError(f"no such image: {path}")
    return Image.open(path).convert("RGB")


#: ``GenerationRequest.loras`` as the command line spells it.
LORA_OPTION = Renamed("--lora", list[str] | None, metavar="NAME[:WEIGHT]",
                      help="A LoRA from the models folder's Lora/ (or a path); repeat for several.",
                      convert=lambda texts: [parse_lora(text) for text in texts])
#: The request fields an evaluation sweeps with (the prompts are the evaluation's own).
SAMPLING = ("sampler", "steps", "cfg_scale")


@app.command()
@friendly_errors
@with_settings_options(*ENGINE_SETTINGS)
@with_model_options(GenerationRequest, skip={"prompt", "init_image", "mask", "enhanced_from"},
                    renamed={"loras": LORA_OPTION})
def generate(
    values: dict,
    settings: dict,
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    init_image: Annotated[Path | None, typer.Option(help="img2img/inpaint: the starting image.")] = None,
    mask: Annotated[Path | None, typer.Option(help="inpaint: white where to redraw.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where to write PNGs (default: settings' outputs dir).")] = None,
    enhance_model: Annotated[str | None, typer.Option(help="--enhance: the vision model (a local name or folder; with "
                                                           "--enhance-base-url, the endpoint's model id).")] = None,
    enhance_base_url: Annotated[str | None, typer.Option(help="--enhance: an OpenAI-compatible endpoint ending in /v1 "
                                                              "(key from $DREAMLOOM_VISION_API_KEY or $OPENAI_API_KEY).")] = None,
) -> None:
    """Text-to-image; with --init-image, image-to-image; with --mask too, inpainting."""
    studio = LocalStudio(Settings.from_env(**settings))
    images = {"init_image": _open_image(init_image), "mask": _open_image(mask)}
    request = studio.check(GenerationRequest(prompt=prompt, **images, **values))  # before torch is imported
    enhance = None
    if request.enhance:  # the engine rewrites the prompt and records it as written ('Enhanced from')
        enhance = lambda text: enhance_prompt(studio, text, enhance_model, enhance_base_url)  # noqa: E731
    total = request.n_iter
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=errors, transient=True) as bar:
        task = bar.add_task("loading model", total=None)
        paths = studio.generate(request, output_dir, enhance=enhance, progress=lambda p: bar.update(
            task, description=f"batch {p.batch + 1}/{total}", completed=p.step, total=p.total))
    for path in paths:
        console.print(str(path), highlight=False, soft_wrap=True)


def _parse_users(auth: list[str]) -> dict[str, str]:
    """``--auth``'s ``USER:PASS[,USER:PASS]`` values as ``ServerConfig.users``."""
    users = {}
    for item in (part for text in auth for part in text.split(",") if part):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth: expected user:password, got {item!r}")
        users[user] = password
    return users


@app.command()
@friendly_errors
@with_settings_options(*ENGINE_SETTINGS)
@with_model_options(ServerConfig, renamed={
    "api_keys": Renamed("--api-key", list[str] | None, envvar="DREAMLOOM_API_KEY",
                        help="Require `Authorization: Bearer KEY`; repeat for several keys."),
    "users": Renamed("--auth", list[str] | None, metavar="USER:PASS[,USER:PASS]",
                     help="Require HTTP basic auth (AUTOMATIC1111's --api-auth).", convert=_parse_users),
    "operators": Renamed("--operator", list[str] | None, metavar="USER",
                         help="A user (or an API key's id, key:<sha256 prefix>) who may change server-wide "
                              "settings; repeat for several. Without credentials the one local user is the operator."),
})
def serve(values: dict, settings: dict) -> None:
    """Serve the web UI (/), the AUTOMATIC1111 API (/sdapi/v1), the OpenAI API (/v1) and the job API (/api/v1)."""
    config = ServerConfig(**values)
    engine_settings = Settings.from_env(**settings)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.auth_required:
        errors.print(f"[yellow]warning:[/yellow] serving on {config.host} without --api-key or --auth: anyone who "
                     "can reach it can use it", highlight=False)
    console.print(f"dreamloom serving on http://{config.host}:{config.port}  "
                  f"({'web UI: /, ' if config.ui else ''}API docs: /docs)", highlight=False)

    import uvicorn

    from dreamloom.serving.app import create_app

    # open txt2img calls wait for their jobs; the jobs themselves survive a restart, so do not wait on them
    uvicorn.run(create_app(config, engine_settings), host=config.host, port=config.port, log_level="warning",
                timeout_graceful_shutdown=3)


@app.command()
@friendly_errors
def info(image: Annotated[Path, typer.Argument(help="A PNG written by dreamloom, AUTOMATIC1111 or SD.Next.")]) -> None:
    """Print an image's generation parameters and the request that reproduces it."""
    from dreamloom.generate.infotext import read_infotext, request_from_infotext

    if not image.exists():
        raise FileNotFoundError(f"no such image: {image}")
    text = read_infotext(image)
    console.print(text, highlight=False)
    console.print_json(request_from_infotext(text).model_dump_json(exclude_none=True))


@app.command()
@friendly_errors
@with_settings_options("models_dir")
def models(settings: dict) -> None:
    """List the models and LoRAs dreamloom can load by name."""
    table = Table("name", "format", "location")
    registry = LocalStudio(Settings.from_env(**settings)).registry
    for entry in [*registry.entries(), *registry.loras()]:
        table.add_row(entry.name + (" (embedded)" if entry.embedded else ""), entry.format, entry.location)
    console.print(table)


@app.command()
@friendly_errors
@with_settings_options("models_dir")
def export(
    settings: dict,
    model: Annotated[str, typer.Argument(help="Model name or diffusers folder.")],
    destination: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    half: Annotated[bool, typer.Option(help="Store float16 weights.")] = False,
) -> None:
    """Write a diffusers model as one LDM-layout .safetensors (for AUTOMATIC1111, ComfyUI)."""
    entry = LocalStudio(Settings.from_env(**settings)).model(model)
    if entry.format != "diffusers":
        raise ValueError(f"{model} is not a diffusers folder; only those can be exported")

    from dreamloom.models.export import export_single_file

    console.print(str(export_single_file(entry.path, destination, half=half)))


@eval_app.command("adherence")
@friendly_errors
@with_model_options(GenerationRequest, only=SAMPLING)
def eval_adherence(
    values: dict,
    model: Annotated[str, typer.Option(help="Model name or path.")] = "dreamloom-tiny-sd",
    prompts: Annotated[int, typer.Option(min=1, help="Held-out prompts per group (1-, 2- and 3-object).")] = 200,
    groups: Annotated[str, typer.Option(help="Comma-separated object counts to evaluate.")] = "1,2",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Generate for held-out ShapeWorld prompts and report adherence per attribute."""
    studio = LocalStudio(Settings.from_env())
    sampling = studio.check(GenerationRequest(prompt="", model=model, **values))
    counts = {int(g): prompts for g in groups.split(",")}

    from dreamloom.eval.adherence import measure_adherence
    from dreamloom.eval.engine_generate import engine_generate_fn

    generate_fn = engine_generate_fn(studio.engine, model, sampling.sampler, sampling.steps, sampling.cfg_scale)
    with Progress(TextColumn("scoring held-out prompts"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=errors, transient=True) as bar:
        task = bar.add_task("", total=sum(counts.values()))
        report = measure_adherence(generate_fn, counts, batch_size=10, progress=lambda done, _: bar.update(task, completed=done))
    table = Table("group", "prompts", "correct", "score", "colour", "shape", "size", "background", "relation", "count")
    for group, row in report.items():
        attrs = row["attributes"]
        cells = [f"{attrs[a]:.1%}" if a in attrs else "-" for a in ("colour", "shape", "size", "background", "relation", "count")]
        table.add_row(group, str(row["prompts"]), f"{row['correct']:.1%}", f"{row['score']:.3f}", *cells)
    Console(width=max(console.width, 110)).print(table)  # whole column names, also when piped
    text = json.dumps({"model": model, **sampling.model_dump(include=set(SAMPLING)), **report}, indent=2)
    console.print(text, highlight=False)
    if json_out:
        json_out.write_text(text)


@train_app.command("tiny-sd")
@friendly_errors
def train_tiny_sd(
    config: Annotated[Path, typer.Option(help="Recipe YAML.")] = Path("configs/tiny-sd.yaml"),
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    stage: Annotated[str, typer.Option(help="all, or one of: vae, unet, decoder, assemble (no training).")] = "all",
) -> None:
    """Train dreamloom-tiny-sd from scratch (resumes an interrupted run in the same output dir)."""
    from dreamloom.train.tiny_sd.config import load_config

    recipe = load_config(config, overrides or [])  # refused before the trainer (torch, Lightning) is imported

    from dreamloom.train.tiny_sd.recipe import run_recipe

    console.print(str(run_recipe(recipe, stage=stage)))


@train_app.command("tiny-clip")
@friendly_errors
def train_tiny_clip(
    config: Annotated[Path, typer.Option(help="Recipe YAML.")] = Path("configs/tiny-clip.yaml"),
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
) -> None:
    """Train dreamloom-tiny-clip from scratch (resumes an interrupted run in the same output dir)."""
    if not config.exists():  # checked here: the recipe's module imports torch and Lightning (seconds)
        raise FileNotFoundError(f"no such config: {config}")

    from dreamloom.train.tiny_clip import load_config, run_recipe

    console.print(str(run_recipe(load_config(config, overrides or []))))


class _ClassImageBar:
    """A progress bar for class-image generation, opened at the first image and closed at the last."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc="class images", unit="img")
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


@train_app.command("dreambooth")
@friendly_errors
def train_dreambooth(
    config: Annotated[Path | None, typer.Option(help="Run YAML (see configs/dreambooth-*.yaml).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides of the config.")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue from a checkpoint path, or 'latest' of output_dir.")] = None,
) -> None:
    """DreamBooth: teach a model a subject from 3-5 images (full fine-tune or LoRA)."""
    from dreamloom.train.dreambooth.config import load_dreambooth_config

    cfg = load_dreambooth_config(config, overrides or [])  # refused before the trainer is imported

    from dreamloom.train.dreambooth.run import run_dreambooth

    result = run_dreambooth(cfg, resume=resume, class_progress=_ClassImageBar())
    if result is None:  # a DDP worker process: rank 0 reports
        return
    table = Table("output", "where", title=f"DreamBooth: {result.steps} steps in {result.minutes:.1f} min, "
                                           f"peak memory {result.peak_rss_mb:.0f} MB")
    for name, path in result.outputs.items():
        table.add_row(name, str(path))
    Console(width=max(console.width, 110)).print(table)


@eval_app.command("dreambooth")
@friendly_errors
@with_model_options(GenerationRequest, only=SAMPLING)
def eval_dreambooth(
    values: dict,
    model: Annotated[str, typer.Option(help="Model name or path: the fine-tuned model, or the base for a LoRA.")] = "dreamloom-tiny-sd",
    subject: Annotated[str, typer.Option(help="Shipped ShapeWorld subject the model was taught.")] = "striped-star",
    lora: Annotated[list[str] | None, typer.Option(help="LoRA to apply, name[:weight]; repeatable.")] = None,
    identifier: Annotated[str, typer.Option(help="The unique token of the instance prompt.")] = "sks",
    samples: Annotated[int, typer.Option(min=2, max=16, help="Images per prompt (seeds 0..n-1).")] = 4,
    clip_model: Annotated[str, typer.Option(help="CLIP for CLIP-I and DIV.")] = "dreamloom-tiny-clip",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """The DreamBooth paper's measures: subject fidelity (CLIP-I, detector), prompt fidelity, PRES, DIV."""
    from dreamloom.shapeworld.subjects import get_subject

    chosen = get_subject(subject)
    loras = [parse_lora(value) for value in lora or []]
    studio = LocalStudio(Settings.from_env())
    sampling = studio.check(GenerationRequest(prompt="", model=model, loras=loras, **values))

    from dreamloom.eval.clip_embedding import load_clip
    from dreamloom.eval.dreambooth import evaluate_dreambooth
    from dreamloom.eval.engine_generate import engine_sample_fn

    sample = engine_sample_fn(studio.engine, model, sampling.sampler, sampling.steps, sampling.cfg_scale, loras)
    with Progress(TextColumn("context prompts"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=errors, transient=True) as bar:
        task = bar.add_task("", total=None)
        report = evaluate_dreambooth(sample, chosen, load_clip(clip_model), identifier, samples,
                                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table("model", "CLIP-I", "subject found", "prompt fidelity", "PRES CLIP-I", "PRES subject found", "DIV",
                  title=f"DreamBooth evaluation: {report['prompts']} context prompts x {samples} samples")
    name = model + "".join(f" + {value}" for value in lora or [])
    table.add_row(name, f"{report['subject_fidelity']['clip_i']:.3f}", f"{report['subject_fidelity']['detected']:.1%}",
                  f"{report['prompt_fidelity']['context']:.1%}", f"{report['pres']['clip_i']:.3f}",
                  f"{report['pres']['detected']:.1%}", f"{report['div']:.3f}")
    Console(width=max(console.width, 110)).print(table)
    text = json.dumps({"model": model, "loras": lora or [], **sampling.model_dump(include=set(SAMPLING)), **report},
                      indent=2)
    console.print(text, highlight=False)
    if json_out:
        json_out.write_text(text)


register_vlm_commands(app, train_app, eval_app, friendly_errors)
register_vision_commands(app, friendly_errors)
