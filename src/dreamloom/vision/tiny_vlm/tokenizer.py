"""The tiny model's tokenizer and chat template, built offline in Llama 4's format.

Llama 4's own tokenizer (200k tokens) would make a 1 M-parameter model mostly embedding
table. This one is word-level over ShapeWorld's closed vocabulary plus the question
words, with Llama 4's special tokens under their real names, so prompts, the chat
template and ``Llama4Processor`` read exactly as they do for Scout/Maverick.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from dreamloom.shapeworld.vocab import BACKGROUND_COLOURS, RELATIONS, SHAPES, SIZES
from dreamloom.vision.tiny_vlm.questions import QUESTION_WORDS

BOS, EOS, EOT, PAD, UNK = "<|begin_of_text|>", "<|end_of_text|>", "<|eot|>", "<|finetune_right_pad|>", "<|unk|>"
IMAGE_START, IMAGE, PATCH, IMAGE_END = "<|image_start|>", "<|image|>", "<|patch|>", "<|image_end|>"
#: Llama 4's special tokens (its names), then an unknown-word token Llama 4 does not need.
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS, EOS, PAD, "<|header_start|>", "<|header_end|>", "<|eom|>", EOT, IMAGE_START, IMAGE_END, IMAGE, PATCH,
    "<|tile_x_separator|>", "<|tile_y_separator|>", "<|python_start|>", "<|python_end|>", UNK,
)
_CAPTION_WORDS = ("a", "an", "on", "of", "and", "background")
_ROLES = ("system", "user", "assistant")
_PUNCTUATION = (".", ",", "?", "!", ":")

#: Llama 4's chat template (meta-llama/Llama-4-Scout-17B-16E-Instruct) without tool calls:
#: a header per turn, "<|image|>" for each image content part, "<|eot|>" after each turn.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|header_start|>assistant<|header_end|>\\n\\n' }}{%- endif %}"
)


def vocabulary() -> list[str]:
    """Every ordinary token: ShapeWorld's words (singular and plural shapes), the question
    words, chat roles and punctuation; sorted so the ids never depend on set order."""
    words = {*BACKGROUND_COLOURS, *SHAPES, *(s + "s" for s in SHAPES), *SIZES, *_CAPTION_WORDS, *QUESTION_WORDS, *_ROLES}
    words |= {w for relation in RELATIONS for w in relation.split()}
    return sorted(words) + list(_PUNCTUATION)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level ``PreTrainedTokenizerFast``: lower-cased ("color" read as "colour"), split
    into words and punctuation; decoding joins words with spaces and closes up punctuation.

    Special tokens come first (ids 0-15); an unknown word becomes ``<|unk|>``. No beginning
    token is added when tokenizing: the chat template writes it, as Llama 4's does."""
    tokens = [*SPECIAL_TOKENS, *vocabulary()]
    backend = Tokenizer(WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace("color", "colour")])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # "circle , a" -> "circle, a"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOT, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, EOT, PAD, UNK)],
        model_max_length=128, padding_side="left", chat_template=CHAT_TEMPLATE,
    )
    return tokenizer
