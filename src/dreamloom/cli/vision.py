"""``dreamloom caption``, ``ask`` and ``judge``: a vision model from the command line, and the
prompt enhancement behind ``dreamloom generate --enhance``.

``register`` adds the commands to the main app, which passes in its error handler (this
module does not import the main one). Every command takes the options of ``VisionConfig``,
so ``--backend remote --base-url URL --model ID`` points any of them at an OpenAI-compatible
endpoint instead of the embedded model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dreamloom.cli.options import with_model_options, with_settings_options
from dreamloom.config import Settings
from dreamloom.service.local import LocalStudio
from dreamloom.vision.service import VisionConfig

console = Console()
errors = Console(stderr=True)

#: The Settings a vision command offers: where its model is, and where it runs.
VISION_SETTINGS = ("models_dir", "device", "dtype")


def _backend(values: dict, settings: dict):
    return LocalStudio(Settings.from_env(**settings)).vision_backend(VisionConfig(**values))


def caption(
    values: dict,
    settings: dict,
    target: Annotated[Path, typer.Argument(metavar="IMG|DIR", help="An image, or a folder of training images.")],
    token: Annotated[str | None, typer.Option(help="Unique token of a DreamBooth subject to put in each caption (sks).")] = None,
    class_noun: Annotated[str | None, typer.Option(help="The subject's class noun, which the token goes before (star).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace caption files that already exist.")] = False,
) -> None:
    """Caption an image; for a folder, write name.txt beside every image (kohya's convention)."""
    from dreamloom.vision.captioning import caption_folder, folder_images, insert_token

    if not target.exists():
        raise FileNotFoundError(f"no such image or folder: {target}")
    if (token is None) != (class_noun is None):
        raise ValueError("--token and --class-noun go together: the token names a subject of the class (sks star)")
    if target.is_dir():
        folder_images(target)  # refuse an ambiguous folder before loading the model
    backend = _backend(values, settings)
    if target.is_file():
        text = backend.caption(target)
        console.print(escape(insert_token(text, token, class_noun) if token else text), highlight=False)
        return
    with Progress(TextColumn("captioning"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=errors, transient=True) as bar:
        task = bar.add_task("", total=None)
        report = caption_folder(backend, target, token, class_noun, overwrite,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"wrote {len(report.written)} captions in {target}", highlight=False)
    if report.kept:
        console.print(f"kept {len(report.kept)} existing caption files (--overwrite replaces them)", highlight=False)


def ask(
    values: dict,
    settings: dict,
    image: Annotated[Path, typer.Argument(help="The image to ask about.")],
    question: Annotated[str, typer.Argument(help="The question.")],
) -> None:
    """Ask the vision model a question about an image."""
    from dreamloom.vision.images import load_image

    picture = load_image(image)
    if not question.strip():
        raise ValueError("the question is empty: ask something about the image")
    console.print(escape(_backend(values, settings).ask(picture, question)), highlight=False)


def judge(
    values: dict,
    settings: dict,
    image: Annotated[Path, typer.Argument(help="A generated image.")],
    prompt: Annotated[str, typer.Argument(help="The prompt it was generated from.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Score how well an image follows its prompt by asking the vision model (VQA); on
    ShapeWorld prompts, compare with the exact scorer."""
    from dreamloom.vision.images import load_image
    from dreamloom.vision.judge import judge as run_judge

    picture = load_image(image)
    if not prompt.strip():
        raise ValueError("the prompt is empty: give the prompt the image was generated from")
    result = run_judge(_backend(values, settings), picture, prompt)
    exact = result.exact or {}
    table = Table("check", "question", "answer", "VQA", "exact", title=f"judging: {escape(prompt)}")
    for check, question, answer, passed in result.answers:
        table.add_row(check, escape(question), escape(answer), "yes" if passed else "no",
                      {True: "yes", False: "no"}.get(exact.get(check), "-"))
    Console(width=max(console.width, 110)).print(table)
    console.print(f"VQA adherence: {result.score:.3f} ({sum(r[3] for r in result.answers)}/{len(result.answers)} "
                  "answers right)", highlight=False)
    if result.exact is not None:
        console.print(f"exact scorer: {result.exact_score:.3f}; agreement with it: {result.agreement:.1%}",
                      highlight=False)
    if json_out:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))


def enhance_prompt(studio: LocalStudio, prompt: str, model: str | None = None, base_url: str | None = None) -> str:
    """``prompt`` rewritten by a vision model (the embedded one unless ``model`` names another,
    or ``base_url`` a remote endpoint), shown on stderr."""
    config = VisionConfig(backend="remote" if base_url else "local", model=model, base_url=base_url)
    enhanced = studio.vision_backend(config).enhance(prompt)
    errors.print(f"enhanced prompt: {escape(enhanced)}", highlight=False, soft_wrap=True)
    return enhanced


def register(app: typer.Typer, friendly_errors: Callable) -> None:
    """Add ``caption``, ``ask`` and ``judge`` to ``app``, their failures reported by ``friendly_errors``."""
    for command in (caption, ask, judge):
        with_settings = with_settings_options(*VISION_SETTINGS)(with_model_options(VisionConfig)(command))
        app.command()(friendly_errors(with_settings))
