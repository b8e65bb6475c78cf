"""The command line, run as a user runs it: a real subprocess, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def dreamloom(*args: str, models_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DREAMLOOM_MODELS_DIR": str(models_dir), "DREAMLOOM_OUTPUTS_DIR": str(cwd / "outputs")}
    return subprocess.run([sys.executable, "-m", "dreamloom", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_generate_prints_paths_and_info_reads_them_back(models_dir, tmp_path):
    run = dreamloom("generate", "a red circle", "--model", "random-sd", "--steps", "3", "--seed", "5",
                    "--batch-size", "2", "--sampler", "Euler a", models_dir=models_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    paths = [Path(line) for line in run.stdout.split()]
    assert len(paths) == 2 and all(p.exists() for p in paths)
    assert "Loading pipeline components" not in run.stderr and "Loading weights" not in run.stderr
    assert "torch_dtype" not in run.stderr and "torchvision" not in run.stderr
    assert "Seed: 6" in Image.open(paths[1]).info["parameters"]
    info = dreamloom("info", str(paths[1]), models_dir=models_dir, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    request = json.loads(info.stdout[info.stdout.index("{"):])
    assert request["seed"] == 6 and request["sampler"] == "Euler a" and request["prompt"] == "a red circle"


def test_img2img_and_inpaint_from_the_command_line(models_dir, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.save(tmp_path / "mask.png")
    run = dreamloom("generate", "a blue square", "--model", "random-sd", "--steps", "3", "--init-image", "init.png",
                    "--mask", "mask.png", "--mask-blur", "0", models_dir=models_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = Image.open(run.stdout.split()[0]).convert("RGB")
    assert out.getpixel((60, 30)) == (200, 30, 30)
    assert "Denoising strength: 0.75" in out.info["parameters"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sampler", "Eular"], "unknown sampler 'Eular'"),
        (["--width", "65"], "--width: must be a multiple of 8"),
        (["--model", "nope"], "model 'nope' not found"),
        (["--init-image", "missing.png"], "no such image: missing.png"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(models_dir, tmp_path, args, message):
    run = dreamloom("generate", "x", "--model", "random-sd", *args, models_dir=models_dir, cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) <= 3


def test_models_lists_the_folder(models_dir, tmp_path):
    run = dreamloom("models", models_dir=models_dir, cwd=tmp_path)
    assert run.returncode == 0 and "random-sd" in run.stdout and "diffusers" in run.stdout


SERVE_OPTIONS_BEFORE = ["--host", "--port", "--api-key", "--auth", "--batch-size", "--batch-wait", "--preview-every",
                        "--data-dir", "--ui", "--no-ui", "--models-dir", "--device", "--dtype", "--allow-pickle",
                        "--max-width", "--max-height", "--max-steps", "--max-batch-size", "--max-n-iter", "--max-queue",
                        "--max-body-bytes"]


def test_serve_still_offers_every_option_it_declared_by_hand(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dreamloom", "serve", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "250"}, cwd=tmp_path, timeout=120)
    assert run.returncode == 0
    offered = {word.strip("│") for line in run.stdout.splitlines() for word in line.split() if word.startswith("--")}
    assert set(SERVE_OPTIONS_BEFORE) <= offered
    assert "Range: at least 0.0, at most 10.0." in run.stdout  # --batch-wait's limits, from ServerConfig


def test_model_options_fill_nested_renamed_and_settings_fields(monkeypatch):
    import typer
    from typer.testing import CliRunner

    from dreamloom.cli.options import Renamed, with_model_options, with_settings_options
    from dreamloom.config import Settings
    from dreamloom.serving.config import ServerConfig

    seen = {}
    app = typer.Typer()

    @app.command()
    @with_settings_options("models_dir", "allow_pickle")
    @with_model_options(ServerConfig, renamed={
        "api_keys": Renamed("--api-key", list[str] | None, envvar="TEST_DREAMLOOM_KEY"),
        "users": Renamed("--auth", list[str] | None, convert=lambda items: dict(i.split(":") for i in items)),
    })
    def serve(values: dict, settings: dict) -> None:
        seen["config"], seen["settings"] = ServerConfig(**values), Settings.from_env(**settings)

    monkeypatch.setenv("TEST_DREAMLOOM_KEY", "k1 k2")
    monkeypatch.setenv("DREAMLOOM_MODELS_DIR", "from-env")
    result = CliRunner().invoke(app, ["--auth", "ann:pw", "--max-steps", "30", "--no-ui", "--port", "9000"])
    assert result.exit_code == 0, result.output
    config, settings = seen["config"], seen["settings"]
    assert config.users == {"ann": "pw"} and config.api_keys == ["k1", "k2"]
    assert config.limits.max_steps == 30 and config.limits.max_width == 2048
    assert (config.ui, config.port, config.host) == (False, 9000, "127.0.0.1")
    assert settings.models_dir == Path("from-env") and settings.allow_pickle is False  # not given: env, then default

    result = CliRunner().invoke(app, ["--models-dir", "given", "--allow-pickle"])
    assert seen["settings"].models_dir == Path("given") and seen["settings"].allow_pickle is True
