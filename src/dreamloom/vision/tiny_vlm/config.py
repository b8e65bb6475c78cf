"""The tiny-VLM recipe as one typed config, loaded from YAML with ``key.sub=value`` overrides,
and the ``Llama4Config`` it describes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import Llama4Config, PreTrainedTokenizerBase

from dreamloom.configfile import load_config as load_typed_config
from dreamloom.vision.tiny_vlm.questions import KINDS
from dreamloom.vision.tiny_vlm.tokenizer import IMAGE_END, IMAGE_START, PATCH


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextConfig(_Strict):
    """Llama 4's decoder: MoE layers (routed experts + a shared expert) interleaved with dense ones."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = Field(2, description="Grouped-query attention, as Llama 4 (8 KV heads for 40).")
    head_dim: int = Field(32, description="Set explicitly: Llama 4's default (128) is for its 5120-wide model.")
    intermediate_size: int = Field(128, description="Each routed expert's and the shared expert's MLP width.")
    intermediate_size_mlp: int = Field(384, description="The dense layers' MLP width.")
    num_local_experts: int = Field(4, ge=2)
    num_experts_per_tok: int = Field(1, ge=1, description="Top-k routing; Llama 4 routes each token to 1 expert.")
    interleave_moe_layer_step: int = Field(2, ge=1, description="Every n-th layer is MoE (Maverick: 2, Scout: 1).")
    no_rope_layer_interval: int = Field(4, description="Every n-th layer attends without RoPE (iRoPE), as Llama 4.")
    use_qk_norm: bool = Field(True, description="RMS-normalize queries and keys in RoPE layers (Scout: yes, Maverick: no).")


class VisionConfig(_Strict):
    """Llama 4's vision encoder: unfolded patches, a ViT, pixel shuffle, a projector MLP."""

    image_size: int = 64
    patch_size: int = Field(8, description="64x64 images give 64 patches, 16 image tokens after pixel shuffle.")
    hidden_size: int = 64
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    pixel_shuffle_ratio: float = Field(0.5, description="Merges 2x2 patches into one token (4x fewer tokens).")
    projector_dim: int = Field(128, description="The pixel-shuffle MLP's width and the vision output size.")

    @model_validator(mode="after")
    def _whole_grid(self) -> VisionConfig:
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or (side * self.pixel_shuffle_ratio) % 1:
            raise ValueError(f"vision: a {self.image_size}-pixel image must split into whole {self.patch_size}-pixel "
                             f"patches that pixel shuffle {self.pixel_shuffle_ratio} merges into whole tokens")
        return self

    @property
    def grid(self) -> int:
        """Image tokens per side: each ``<|patch|>`` stands for one cell of a grid x grid split."""
        return int(self.image_size // self.patch_size * self.pixel_shuffle_ratio)


class DataConfig(_Strict):
    train_scenes: int = Field(40_000, gt=0, description="Scenes rendered once; every step draws fresh questions about them.")
    seed: int = Field(2, description="Seed of the training scenes; held-out scenes come from dreamloom.eval.prompts.")
    turns: int = Field(1, ge=1, description="Questions asked (and answered) in turn about each training image. More "
                                           "than one is cheaper per answer but lets later answers copy earlier ones "
                                           "(after a caption, \"Is there a red square?\" needs no look at the image): "
                                           "at 4 the model captioned 77 % right but answered yes/no at chance.")
    kinds: dict[str, float] = Field(
        {"caption": 0.3, "colour": 0.1, "shape": 0.1, "size": 0.05, "count": 0.1, "background": 0.05,
         "relation": 0.1, "position": 0.1, "exists": 0.1},
        description="Odds of each question kind in training.",
    )
    text_first: float = Field(0.0, ge=0, le=1, description="Share of chats whose question comes before the image, "
                                                           "as OpenAI clients send it.")
    reworded: float = Field(0.0, ge=0, le=1, description="Share of questions worded as users word them "
                                                         "(questions.reword: other phrasings, case, punctuation).")

    @model_validator(mode="after")
    def _known_kinds(self) -> DataConfig:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not any(v > 0 for v in self.kinds.values()):
            raise ValueError(f"data.kinds: unknown {sorted(unknown)} or no positive odds; kinds are {', '.join(KINDS)}")
        return self


class VisionStageConfig(_Strict):
    """Stage 1: the vision encoder alone learns to read what lies in each image token's cell."""

    steps: int = Field(1500, ge=0, description="Steps of stage 1 (0: none; the encoder then learns from answers only).")
    batch_size: int = Field(128, gt=0, description="Images per step (no text: a step costs little).")
    lr: float = 3e-3
    warmup_steps: int = 100


class TinyVlmConfig(_Strict):
    output_dir: Path = Path("training/tiny-vlm")
    seed: int = 0
    init_from: Path | None = Field(None, description="Fine-tune: start from this model folder's weights (a "
                                                     "finished run's output_dir/model) and skip stage 1.")
    steps: int = Field(2000, description="Steps of stage 2: the whole model on captions and questions.")
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = Field(0.05, description="AdamW decay of matrices only.")
    warmup_steps: int = 150
    router_aux_loss_coef: float = Field(0.01, ge=0, description="Switch-Transformer load balancing (Fedus et al. 2021).")
    cell_loss_weight: float = Field(1.0, ge=0, description="Weight in stage 2 of stage 1's read-out of the image tokens "
                                                           "(vision_stage.CellHead).")
    checkpoint_every: int = Field(250, description="Steps between resumable checkpoints.")
    eval_every: int = Field(500, description="Steps between held-out accuracy measurements.")
    eval_scenes: int = Field(20, gt=0, description="Held-out scenes per group (1, 2, 3 objects) in each measurement.")
    data: DataConfig = DataConfig()
    vision_stage: VisionStageConfig = VisionStageConfig()
    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> TinyVlmConfig:
    """The recipe from a YAML file (or the defaults) with ``key.sub=value`` overrides."""
    return load_typed_config(TinyVlmConfig, path, overrides)


def llama4_config(cfg: TinyVlmConfig, tokenizer: PreTrainedTokenizerBase) -> Llama4Config:
    """The ``Llama4Config`` of ``cfg``: token ids from ``tokenizer``, the vision MLP widths
    pixel shuffle forces (hidden / ratio²), and the projector's input = output = vision output."""
    v, t = cfg.vision, cfg.text
    shuffled = int(v.hidden_size / v.pixel_shuffle_ratio**2)
    vision = {
        "image_size": v.image_size, "patch_size": v.patch_size, "hidden_size": v.hidden_size,
        "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
        "intermediate_size": shuffled, "pixel_shuffle_ratio": v.pixel_shuffle_ratio,
        "projector_input_dim": v.projector_dim, "projector_output_dim": v.projector_dim, "vision_output_dim": v.projector_dim,
    }
    text = {
        **t.model_dump(), "vocab_size": len(tokenizer), "max_position_embeddings": 256,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }
    return Llama4Config(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(PATCH),
        boi_token_index=tokenizer.convert_tokens_to_ids(IMAGE_START), eoi_token_index=tokenizer.convert_tokens_to_ids(IMAGE_END),
    )
