"""Judge an image against its prompt by asking a vision model about it (VQA-based
adherence, as TIFA, Hu et al. 2023, and DSG, Cho et al. 2024, measure text-to-image
faithfulness), and on ShapeWorld check the judge against the exact scorer.

A ShapeWorld prompt is parsed into what it asks for; each of the scorer's checks
(``object0.colour``, ``object0.shape``, ``object0.size``, ``background``, ``relation``,
``count``) becomes one question with a known right answer, phrased as dreamloom-tiny-vlm
was trained to hear it. The VQA score is the share of right answers; agreement is the share
of checks where the model's verdict equals the scorer's. Any other prompt gets one yes/no
question, which only an instruction-following model can answer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from PIL import Image

from dreamloom.shapeworld import ObjectSpec, parse_prompt, score_image
from dreamloom.vision.backends import EmptyAnswer, VisionBackend

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class JudgeQuestion:
    """A question standing for one check, and the answers that pass it."""

    check: str
    text: str
    accepted: tuple[str, ...]


@dataclass
class Judgement:
    prompt: str
    #: (check, question, answer, passed) for every question asked.
    answers: list[tuple[str, str, str, bool]]
    #: The exact scorer's checks (ShapeWorld prompts only).
    exact: dict[str, bool] | None = None
    exact_score: float | None = None

    @property
    def score(self) -> float:
        return sum(passed for *_, passed in self.answers) / len(self.answers)

    @property
    def verdicts(self) -> dict[str, bool]:
        return {check: passed for check, _, _, passed in self.answers}

    @property
    def agreement(self) -> float | None:
        """Share of the checks both made where the model's verdict equals the scorer's."""
        if not self.exact:
            return None
        shared = [check for check in self.verdicts if check in self.exact]
        return sum(self.verdicts[c] == self.exact[c] for c in shared) / len(shared) if shared else None

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score, "agreement": self.agreement}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _reference(obj: ObjectSpec, objects: tuple[ObjectSpec, ...], without: str = "") -> str | None:
    """The shortest phrase naming ``obj`` and no other object of the prompt, without using
    attribute ``without`` (the one asked about); None when none does."""
    orders = [("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape")]
    if without == "shape":
        orders = [("colour",), ("size",), ("size", "colour")]
    for attrs in orders:
        key = [getattr(obj, a) for a in attrs]
        if without in attrs or None in key:
            continue
        if sum([getattr(o, a) for a in attrs] == key for o in objects) == 1:
            return " ".join(key) + (" object" if without == "shape" else "")
    return None


def _object_questions(i: int, obj: ObjectSpec, objects: tuple[ObjectSpec, ...]) -> list[JudgeQuestion]:
    questions = []
    if obj.colour is not None:
        ref = _reference(obj, objects, "colour")
        questions.append(JudgeQuestion(f"object{i}.colour", f"What colour is the {ref}?", (obj.colour,)) if ref else
                         JudgeQuestion(f"object{i}.colour", f"Is there {_article(obj.colour)} {obj.colour} {obj.shape}?",
                                       ("yes",)))
    ref = _reference(obj, objects, "shape")
    questions.append(JudgeQuestion(f"object{i}.shape", f"What shape is the {ref}?", (obj.shape,)) if ref else
                     JudgeQuestion(f"object{i}.shape", f"How many {obj.shape}s are there?", NUMBERS[1:]))
    if obj.size is not None and (ref := _reference(obj, objects, "size")):
        questions.append(JudgeQuestion(f"object{i}.size", f"What size is the {ref}?", (obj.size,)))
    return questions


def questions_for(prompt: str) -> list[JudgeQuestion]:
    """The questions that check ``prompt``: one per exact-scorer check for a ShapeWorld
    prompt, else one yes/no question about the whole prompt."""
    spec = parse_prompt(prompt)
    if not spec.objects:
        return [JudgeQuestion("prompt", f"Does the image show {prompt.strip().rstrip('.')}? Answer yes or no.", ("yes",))]
    questions = [q for i, obj in enumerate(spec.objects) for q in _object_questions(i, obj, spec.objects)]
    if spec.background is not None:
        questions.append(JudgeQuestion("background", "What colour is the background?", (spec.background,)))
    if spec.relation is not None:
        first, second = (_reference(o, spec.objects) for o in spec.objects[:2])
        if first and second:
            questions.append(JudgeQuestion("relation", f"Is the {first} {spec.relation} the {second}?", ("yes",)))
    if len(spec.objects) < len(NUMBERS):
        questions.append(JudgeQuestion("count", "How many shapes are there?", (NUMBERS[len(spec.objects)],)))
    return questions


def answer_passes(answer: str, accepted: tuple[str, ...]) -> bool:
    """Whether ``answer`` gives one of the ``accepted`` answers: a yes/no answer by its first
    word, any other by a whole-word match ("It is red." passes "red"; digits count as numbers)."""
    words = [NUMBERS[int(w)] if w.isdigit() and int(w) < len(NUMBERS) else w
             for w in re.findall(r"[a-z0-9]+", answer.lower())]
    if not words:
        return False
    if set(accepted) <= {"yes", "no"}:
        return words[0] in accepted
    text = f" {' '.join(words)} "
    return any(f" {phrase} " in text for phrase in accepted)


def judge(backend: VisionBackend, image: Image.Image, prompt: str) -> Judgement:
    """Ask ``backend`` every question of ``prompt`` about ``image``; on ShapeWorld prompts the
    exact scorer's checks ride along for comparison."""
    answers, asked = [], {}
    for question in questions_for(prompt):
        if question.text not in asked:  # two objects of one description share their questions
            try:
                asked[question.text] = backend.ask(image, question.text)
            except EmptyAnswer:  # no answer fails its check; the other questions still count
                asked[question.text] = ""
        answer = asked[question.text]
        answers.append((question.check, question.text, answer, answer_passes(answer, question.accepted)))
    judgement = Judgement(prompt, answers)
    if parse_prompt(prompt).objects:
        adherence = score_image(image, prompt)
        judgement.exact = adherence.checks
        judgement.exact_score = adherence.score
    return judgement
