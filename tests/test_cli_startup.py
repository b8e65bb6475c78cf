"""The command line answers help and refusals without importing the heavy libraries.

torch, diffusers and transformers take seconds to import; ``dreamloom --help`` and every
error a user can make at the prompt must not wait for them. Each case runs the real CLI in
a subprocess under ``python -X importtime`` and reads back which modules were imported.
Speed itself is measured (README), not asserted: a loaded test machine would make it flaky.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = {"torch", "diffusers", "transformers", "pytorch_lightning", "lightning", "gradio", "fastapi", "uvicorn"}


def run_cli(*args: str, cwd: Path) -> tuple[int, set[str], list[str]]:
    """Exit code, the top-level packages imported, and stderr without the import timings."""
    env = {**os.environ, "DREAMLOOM_MODELS_DIR": str(cwd / "models"), "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "dreamloom", *args], capture_output=True,
                         text=True, env=env, cwd=cwd, timeout=120)
    timings = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in timings[1:]}  # [0] is the header
    messages = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("import time:")]
    return run.returncode, imported, messages


@pytest.mark.parametrize("args", [
    ["--help"],
    ["generate", "--help"],
    ["serve", "--help"],
    ["train", "dreambooth", "--help"],
    ["eval", "dreambooth", "--help"],
    ["caption", "--help"],
])
def test_help_imports_nothing_heavy(tmp_path, args):
    code, imported, _ = run_cli(*args, cwd=tmp_path)
    assert code == 0
    assert "dreamloom" in imported and not imported & HEAVY, imported & HEAVY


@pytest.mark.parametrize("args, message", [
    (["generate", "x", "--steps", "0"], "--steps: Input should be greater than or equal to 1"),
    (["generate", "x", "--sampler", "Eular"], "--sampler: unknown sampler 'Eular'"),
    (["generate", "x", "--model", "nope"], "model 'nope' not found"),
    (["generate", "x", "--lora", "nope"], "LoRA 'nope' not found"),
    (["generate", "x", "--lora", "a:b:c"], "LoRA 'a:b:c': write name or name:weight"),
    (["generate", "x", "--init-image", "missing.png"], "no such image: missing.png"),
    (["serve", "--batch-wait", "20"], "--batch-wait: Input should be less than or equal to 10"),
    (["serve", "--max-steps", "0"], "--max-steps: Input should be greater than or equal to 1"),
    (["serve", "--auth", "nopassword"], "--auth: expected user:password, got 'nopassword'"),
    (["train", "dreambooth", "--config", "missing.yaml"], "no such config: missing.yaml"),
    (["train", "dreambooth", "--config", "run.yaml", "lora.rnak=4"], "lora.rnak: unknown config key"),
    (["train", "tiny-sd", "--config", "run.yaml", "unet.stepz=1"], "unet.stepz: unknown config key"),
    (["train", "tiny-clip", "--config", "missing.yaml"], "no such config: missing.yaml"),
    (["train", "tiny-sd", "--config", "missing.yaml"], "no such config: missing.yaml"),
    (["eval", "adherence", "--steps", "0"], "--steps: Input should be greater than or equal to 1"),
    (["ask", "missing.png", "what?"], "missing.png"),
])
def test_refusals_are_one_line_exit_2_and_import_nothing_heavy(tmp_path, args, message):
    (tmp_path / "run.yaml").write_text("instance_data_dir: .\ninstance_prompt: a sks star\nclass_prompt: a star\n")
    code, imported, messages = run_cli(*args, cwd=tmp_path)
    assert code == 2, messages
    assert len(messages) == 1 and message in messages[0], messages
    assert not imported & HEAVY, imported & HEAVY


def test_a_value_click_cannot_parse_is_refused_before_any_heavy_import(tmp_path):
    code, imported, messages = run_cli("generate", "x", "--steps", "many", cwd=tmp_path)
    assert code == 2 and "'--steps'" in "\n".join(messages) and "Traceback" not in "\n".join(messages)
    assert not imported & HEAVY, imported & HEAVY
