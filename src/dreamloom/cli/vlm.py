"""Commands for Llama 4 vision-language models: ``vlm experts``, ``train tiny-vlm``, ``eval tiny-vlm``.

``register`` adds them to the main app, which passes in its sub-apps and its error
handler (this module does not import the main one, so it can be imported on its own).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

vlm_app = typer.Typer(no_args_is_help=True, help="Vision-language models (Llama 4): look inside them.")
console = Console()
errors = Console(stderr=True)

ModelOption = Annotated[str | None, typer.Option(
    "--model", help="Llama 4 folder or hub id (default: the shipped dreamloom-tiny-vlm).")]


def _load(model: str | None):
    """The model (eval mode, CPU) and its processor; the shipped tiny model by default."""
    from transformers import Llama4ForConditionalGeneration

    from dreamloom.models.loading import quiet_loading
    from dreamloom.vision.processor import load_processor
    from dreamloom.vision.tiny_vlm.folder import embedded_vlm_path

    path = model or str(embedded_vlm_path())
    with quiet_loading():
        return Llama4ForConditionalGeneration.from_pretrained(path).eval(), load_processor(path)


def _wide() -> Console:
    return Console(width=max(console.width, 110))  # whole column names, also when piped


def experts(
    model: ModelOption = None,
    examples: Annotated[int, typer.Option(min=1, help="Held-out ShapeWorld questions (with their images) to route.")] = 64,
    plot: Annotated[Path | None, typer.Option(help="Also draw the usage as a PNG bar chart here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Parameters active per token vs total, and each MoE layer's expert usage by image and text tokens."""
    from dreamloom.vision.tiny_vlm.experts import expert_usage, held_out_chats, parameter_counts, plot_usage

    llama, processor = _load(model)
    counts = parameter_counts(llama)
    usage = expert_usage(llama, processor, held_out_chats(examples))
    if not usage:
        raise ValueError(f"{model or 'the model'} has no mixture-of-experts layers")
    table = Table("parameters", "count", title=f"{counts['active_per_token'] / counts['total']:.0%} of the parameters "
                                               "are active per token")
    for name, value in counts.items():
        table.add_row(name.replace("_", " "), f"{value:,}")
    _wide().print(table)
    n_experts = len(next(iter(usage.values()))["image"])
    table = Table("MoE layer", "tokens", *(f"expert {e}" for e in range(n_experts)),
                  title=f"Share of routed tokens per expert, {examples} held-out questions")
    for layer, per in usage.items():
        for modality, shares in per.items():
            table.add_row(str(layer), modality, *(f"{s:.1%}" for s in shares))
    _wide().print(table)
    if plot:
        console.print(str(plot_usage(usage, plot)), highlight=False)
    if json_out:
        json_out.write_text(json.dumps({"parameters": counts, "usage": usage}, indent=2))


def train_tiny_vlm(
    config: Annotated[Path, typer.Option(help="Recipe YAML.")] = Path("configs/tiny-vlm.yaml"),
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue from a checkpoint path, or 'latest' of output_dir.")] = None,
) -> None:
    """Train dreamloom-tiny-vlm (a tiny Llama 4) from scratch on ShapeWorld captions and questions."""
    if not config.exists():  # checked here: the recipe's config imports transformers (seconds)
        raise FileNotFoundError(f"no such config: {config}")

    from dreamloom.vision.tiny_vlm.config import load_config
    from dreamloom.vision.tiny_vlm.recipe import run_recipe

    console.print(str(run_recipe(load_config(config, overrides or []), resume=resume)), highlight=False)


def eval_tiny_vlm(
    model: ModelOption = None,
    scenes: Annotated[int, typer.Option(min=1, help="Held-out scenes per group (1-, 2- and 3-object).")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
) -> None:
    """Held-out ShapeWorld VQA exact match per question kind, and captions read back by ShapeWorld's parser."""
    from dreamloom.vision.tiny_vlm.evaluate import evaluate

    llama, processor = _load(model)
    with Progress(TextColumn("held-out questions"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=errors, transient=True) as bar:
        task = bar.add_task("", total=None)
        report = evaluate(llama, processor, scenes, progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table("measure", "questions", "exact match", title=f"{report['held_out_scenes']} held-out scenes")
    for kind, share in report["vqa_exact_match"].items():
        table.add_row(f"VQA {kind}", str(report["vqa_questions"][kind]), f"{share:.1%}")
    for part, share in report["caption_parse"].items():
        table.add_row(f"caption {part}", str(report["caption_checked"][part]), f"{share:.1%}")
    _wide().print(table)
    text = json.dumps({"model": model or "dreamloom-tiny-vlm", **report}, indent=2)
    console.print(text, highlight=False)
    if json_out:
        json_out.write_text(text)


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer, friendly_errors: Callable) -> None:
    """Add ``vlm experts``, ``train tiny-vlm`` and ``eval tiny-vlm``, each behind ``friendly_errors``."""
    vlm_app.command("experts")(friendly_errors(experts))
    train_app.command("tiny-vlm")(friendly_errors(train_tiny_vlm))
    eval_app.command("tiny-vlm")(friendly_errors(eval_tiny_vlm))
    app.add_typer(vlm_app, name="vlm")
