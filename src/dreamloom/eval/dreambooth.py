"""DreamBooth's evaluation protocol (Ruiz et al. 2022, Sec. 4.1 and 4.3) in miniature, on ShapeWorld.

For every context prompt of a subject ("a sks star left of a small red square on a green
background") a model draws ``samples`` images, and for the same prompt without the
identifier ("a star left of ...") as many again. Then:

- subject fidelity: CLIP-I, the mean image-embedding cosine between generated and real
  subject images (the paper's CLIP-I), and the share of images in which the exact subject
  detector finds the subject (standing in for the paper's DINO score);
- prompt fidelity: the ShapeWorld scorer's verdicts on the context part of each prompt
  (background, neighbour, relation, size): the exact analogue of CLIP-T;
- PRES (prior preservation): how far plain class prompts drifted toward the subject: CLIP-I
  of the class-prompt images against the subject, and the share showing the subject;
- DIV: 1 - the mean pairwise image-embedding cosine among samples of one prompt (the paper
  uses LPIPS distance; an embedding distance plays its part here).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import torch
from PIL import Image

from dreamloom.eval.clip_embedding import ClipEmbedder, clip_i
from dreamloom.shapeworld.subjects import Subject, context_checks, context_prompts, detect_subject, instance_images

#: Draws ``count`` images of ``prompt`` with seeds 0..count-1.
SampleFn = Callable[[str, int], Sequence[Image.Image]]


def diversity(embeddings: torch.Tensor) -> float:
    """1 - mean pairwise cosine of L2-normalized embeddings: 0 when all samples look alike."""
    pairs = list(combinations(range(len(embeddings)), 2))
    if not pairs:
        return 0.0
    return 1.0 - float(np.mean([float(embeddings[i] @ embeddings[j]) for i, j in pairs]))


def evaluate_dreambooth(
    sample: SampleFn,
    subject: Subject,
    clip: ClipEmbedder,
    identifier: str = "sks",
    samples: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run the protocol with ``sample`` (one model, fixed seeds) on ``subject``'s context prompts.

    Returns subject fidelity, prompt fidelity (overall and per check), PRES and DIV, each a
    mean over all prompts and samples; ``progress(done, total)`` follows the prompts."""
    references = clip.image_embeddings(instance_images(subject))
    contexts = context_prompts(subject, identifier)
    clip_scores, detected, div, pres_clip, pres_detected = [], [], [], [], []
    checks: dict[str, list[bool]] = defaultdict(list)
    for done, context in enumerate(contexts, start=1):
        images = list(sample(context.prompt, samples))
        embeddings = clip.image_embeddings(images)
        clip_scores.append(clip_i(embeddings, references))
        detected += [detect_subject(image, subject).present for image in images]
        div.append(diversity(embeddings))
        for image in images:
            for name, ok in context_checks(image, context, subject).items():
                checks[name].append(ok)
        class_images = list(sample(context.class_prompt, samples))
        pres_clip.append(clip_i(clip.image_embeddings(class_images), references))
        pres_detected += [detect_subject(image, subject).present for image in class_images]
        if progress:
            progress(done, len(contexts))
    every_check = [ok for values in checks.values() for ok in values]
    return {
        "subject": subject.name,
        "prompts": len(contexts),
        "samples_per_prompt": samples,
        "subject_fidelity": {"clip_i": float(np.mean(clip_scores)), "detected": float(np.mean(detected))},
        "prompt_fidelity": {"context": float(np.mean(every_check)),
                            "checks": {name: float(np.mean(v)) for name, v in sorted(checks.items())}},
        "pres": {"clip_i": float(np.mean(pres_clip)), "detected": float(np.mean(pres_detected))},
        "div": float(np.mean(div)),
    }
