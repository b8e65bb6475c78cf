"""The DreamBooth table: base model, full fine-tune with and without prior preservation, and
LoRA, on a shipped ShapeWorld subject, each measured with ``dreamloom eval dreambooth``.

Every training run is the CLI a user runs (its own process, so its peak memory is its own),
from ``configs/dreambooth-striped-star.yaml`` plus the overrides below; the class images
are generated once, timed apart, and shared.

    python bench/dreambooth.py          # writes bench/results/dreambooth.json and prints a table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "dreambooth-striped-star.yaml"
VARIANTS = {
    "DreamBooth, full fine-tune": [],
    "DreamBooth, full fine-tune, no prior preservation": ["with_prior_preservation=false"],
    "DreamBooth, LoRA rank 8 (attention + convolutions)": [
        "lora.enabled=true", "lora.rank=8", "lora.alpha=8", "learning_rate=3e-4",
        "lora.unet_target_modules=[to_k,to_q,to_v,to_out.0,conv1,conv2]"],
}


def dreamloom(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dreamloom", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def evaluate(workdir: Path, name: str, model: str, loras: list[str], samples: int) -> dict:
    report = workdir / f"{name}.json"
    dreamloom("eval", "dreambooth", "--model", model, *[f"--lora={lora}" for lora in loras],
              "--samples", str(samples), "--json", str(report))
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dreambooth.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        classes = f"class_data_dir={workdir / 'class-images'}"
        start = time.perf_counter()
        from dreamloom.train.dreambooth.class_images import class_prompts, ensure_class_images
        from dreamloom.train.dreambooth.config import load_dreambooth_config
        from dreamloom.train.dreambooth.data import find_examples

        cfg = load_dreambooth_config(CONFIG, [classes])
        prompts = class_prompts(find_examples(cfg.instance_data_dir, cfg.instance_prompt), cfg.instance_prompt, cfg.class_prompt)
        ensure_class_images(cfg.class_dir, prompts, cfg.num_class_images, cfg.base_model, cfg.class_image_steps)
        class_minutes = (time.perf_counter() - start) / 60
        rows.append({**evaluate(workdir, "base", cfg.base_model, [], args.samples),
                     "model": f"base ({cfg.base_model})", "minutes": 0.0, "peak_rss_mb": None})
        for i, (name, overrides) in enumerate(VARIANTS.items()):
            out = workdir / f"run{i}"
            dreamloom("train", "dreambooth", "--config", str(CONFIG), classes, f"output_dir={out}", "validation.prompts=[]",
                      *overrides)
            summary = json.loads((out / "summary.json").read_text())
            lora = summary["outputs"].get("LoRA (kohya / AUTOMATIC1111)")
            model = cfg.base_model if lora else summary["outputs"]["model (diffusers folder)"]
            rows.append({**evaluate(workdir, f"run{i}", model, [lora] if lora else [], args.samples), "model": name,
                         "minutes": summary["minutes"], "peak_rss_mb": summary["peak_rss_mb"], "overrides": overrides})
    report = {"config": str(CONFIG.relative_to(ROOT)), "class_images_minutes": round(class_minutes, 2), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("| model | CPU min | peak RSS MB | CLIP-I | subject found | prompt fidelity | PRES CLIP-I | PRES subject found | DIV |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        rss = f"{row['peak_rss_mb']:.0f}" if row["peak_rss_mb"] else "-"
        print(f"| {row['model']} | {row['minutes']:.1f} | {rss} | {row['subject_fidelity']['clip_i']:.3f} | "
              f"{row['subject_fidelity']['detected']:.0%} | {row['prompt_fidelity']['context']:.0%} | "
              f"{row['pres']['clip_i']:.3f} | {row['pres']['detected']:.0%} | {row['div']:.3f} |")


if __name__ == "__main__":
    main()
