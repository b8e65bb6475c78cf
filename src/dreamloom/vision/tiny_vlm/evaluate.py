"""Held-out measures of a Llama 4 VLM on ShapeWorld: VQA exact match per question kind, and
captions read back by ShapeWorld's own parser and compared with the scene's ground truth.

Answers come from plain ``model.generate`` (greedy) on the processor's output, exactly as
any caller would run the model; held-out scenes come from ``dreamloom.eval.prompts``' seeds,
which no training recipe uses.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from transformers import Llama4ForConditionalGeneration, ProcessorMixin

from dreamloom.eval.prompts import held_out_scenes
from dreamloom.shapeworld import Scene, parse_prompt, render
from dreamloom.vision.tiny_vlm.data import user_turn
from dreamloom.vision.tiny_vlm.questions import KINDS, Question, ask

_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
#: New tokens allowed: a short answer is at most two words; a three-object caption about twenty.
_MAX_NEW_TOKENS = {"caption": 32}
_SHORT_ANSWER_TOKENS = 4


def held_out_questions(per_group: int, kinds: Sequence[str] = KINDS) -> list[tuple[Scene, Question]]:
    """Every kind of question that applies, once per held-out scene, ``per_group`` scenes of
    one, two and three objects; the same list on every call."""
    pairs = []
    for n_objects in (1, 2, 3):
        for index, scene in enumerate(held_out_scenes(per_group, n_objects)):
            rng = random.Random(f"held-out-{n_objects}-{index}")
            pairs += [(scene, q) for kind in kinds if (q := ask(scene, kind, rng)) is not None]
    return pairs


@torch.no_grad()
def answer(model: Llama4ForConditionalGeneration, processor: ProcessorMixin, images: Sequence[Image.Image],
           questions: Sequence[str], max_new_tokens: int, text_first: bool = False) -> list[str]:
    """Greedy answers to one question per image, in one batched ``generate`` call; the
    question before the image when ``text_first``."""
    texts = [processor.apply_chat_template([user_turn(q, text_first=text_first)], add_generation_prompt=True,
                                           tokenize=False) for q in questions]
    inputs = processor(text=texts, images=list(images), padding=True, return_tensors="pt").to(model.device)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [text.strip() for text in processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)]


def caption_reading(scene: Scene, caption: str) -> dict[str, bool]:
    """What ShapeWorld's parser reads in ``caption``, checked against ``scene``: the objects
    (shape, colour, size, in any order), the background, for a two-object scene the relation
    (either way round: "A left of B" is "B right of A"), and all of them together ("correct")."""
    spec = parse_prompt(caption)
    truth = Counter((o.shape, o.colour, o.size) for o in scene.objects)
    read = [(o.shape, o.colour, o.size) for o in spec.objects]
    checks = {"objects": Counter(read) == truth, "background": spec.background == scene.background}
    if scene.relation is not None:
        a, b = ((o.shape, o.colour, o.size) for o in scene.objects)
        stated = (read[0], spec.relation, read[1]) if len(read) == 2 else None
        checks["relation"] = stated in ((a, scene.relation, b), (b, _INVERSE[scene.relation], a))
    return {**checks, "correct": all(checks.values())}


def evaluate(model: Llama4ForConditionalGeneration, processor: ProcessorMixin, per_group: int, batch_size: int = 64,
             progress: Callable[[int, int], None] | None = None, text_first: bool = False) -> dict:
    """Exact-match accuracy per question kind over ``held_out_questions(per_group)``, and the
    share of generated captions whose reading is right (overall, per part, per object count);
    each question before its image when ``text_first``."""
    pairs = sorted(held_out_questions(per_group), key=lambda p: p[1].kind == "caption")  # short answers batch together
    model.eval()
    right: dict[str, list[bool]] = defaultdict(list)
    captions: dict[str, list[bool]] = defaultdict(list)
    by_objects: dict[str, list[bool]] = defaultdict(list)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        longest = max(_MAX_NEW_TOKENS.get(q.kind, _SHORT_ANSWER_TOKENS) for _, q in chunk)
        images, questions = [render(s) for s, _ in chunk], [q.text for _, q in chunk]
        replies = answer(model, processor, images, questions, longest, text_first)
        for (scene, question), reply in zip(chunk, replies):
            if question.kind == "caption":
                reading = caption_reading(scene, reply)
                for part, ok in reading.items():
                    captions[part].append(ok)
                by_objects[f"{len(scene.objects)}-object"].append(reading["correct"])
            else:
                right[question.kind].append(reply == question.answer)
        if progress:
            progress(min(start + batch_size, len(pairs)), len(pairs))
    share = lambda oks: round(sum(oks) / len(oks), 4)
    return {
        "held_out_scenes": 3 * per_group,
        "vqa_exact_match": {kind: share(right[kind]) for kind in KINDS if right[kind]},
        "vqa_questions": {kind: len(right[kind]) for kind in KINDS if right[kind]},
        "caption_parse": {part: share(oks) for part, oks in captions.items()},
        "caption_checked": {part: len(oks) for part, oks in captions.items()},
        "caption_parse_by_objects": {group: share(oks) for group, oks in sorted(by_objects.items())},
    }
