"""The DreamBooth LightningModule: the denoising loss on instance and class examples.

``loss = instance + prior_loss_weight * class`` with both halves in one batch, as in
Ruiz et al. (2022), Eq. 2. The VAE is frozen; the UNet is trained (fully, or through
peft LoRA adapters on its attention projections); the text encoder only when asked.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_snr
from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model

from dreamloom.train.dreambooth.config import DreamBoothConfig


def eight_bit_adamw() -> type[torch.optim.Optimizer]:
    """bitsandbytes' AdamW8bit, or a clear error where it cannot run."""
    try:
        import bitsandbytes
    except ImportError:
        raise ValueError("use_8bit_adam needs bitsandbytes: pip install 'dreamloom[8bit]' (it runs on CUDA GPUs)") from None
    if not torch.cuda.is_available():
        raise ValueError("use_8bit_adam needs a CUDA GPU; bitsandbytes' 8-bit optimizers do not run on this machine")
    return bitsandbytes.optim.AdamW8bit


class DreamBoothModule(pl.LightningModule):
    def __init__(self, cfg: DreamBoothConfig, base: StableDiffusionPipeline):
        super().__init__()
        self.save_hyperparameters({"config": cfg.model_dump(mode="json")})
        self.cfg = cfg
        self.unet, self.vae, self.text_encoder = base.unet, base.vae, base.text_encoder
        self.tokenizer = base.tokenizer
        self.noise_scheduler = DDPMScheduler.from_config(base.scheduler.config)  # add_noise, get_velocity, SNR
        self.unet.train()
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(cfg.train_text_encoder and not cfg.lora.enabled).train(cfg.train_text_encoder)
        if cfg.lora.enabled:
            self.unet.requires_grad_(False)
            self.unet.add_adapter(self._lora(cfg.lora.unet_target_modules))
            if cfg.train_text_encoder:  # peft's own call: transformers' add_adapter wants a newer peft
                inject_adapter_in_model(self._lora(cfg.lora.text_encoder_target_modules), self.text_encoder)
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                self.text_encoder.gradient_checkpointing_enable()
        # Checkpoints keep only what trains: a LoRA checkpoint stays megabytes, not the base model.
        self.strict_loading = False

    def _lora(self, targets: list[str]) -> PeftLoraConfig:
        lora = self.cfg.lora
        return PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                              init_lora_weights="gaussian", target_modules=targets)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def on_train_start(self) -> None:
        self.vae.eval()  # Lightning puts every submodule in train mode; the frozen VAE stays in eval
        if not self.cfg.train_text_encoder:
            self.text_encoder.eval()

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.train_text_encoder:
            return self.text_encoder(input_ids)[0]
        with torch.no_grad():
            return self.text_encoder(input_ids)[0]

    def per_sample_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (optionally Min-SNR weighted) denoising MSE of every example in ``batch``."""
        with torch.no_grad():
            latents = self.vae.encode(batch["pixels"].to(self.vae.dtype)).latent_dist.mode()
            latents = latents * self.vae.config.scaling_factor
        noise, timesteps = batch["noise"], batch["timesteps"]
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        v_prediction = self.noise_scheduler.config.prediction_type == "v_prediction"
        target = self.noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
        prediction = self.unet(noisy, timesteps, self.encode_text(batch["input_ids"])).sample
        loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.cfg.snr_gamma is not None:  # Hang et al. (2023): min(SNR, gamma) / SNR, or / (SNR + 1) for v
            snr = compute_snr(self.noise_scheduler, timesteps)
            weight = snr.clamp(max=self.cfg.snr_gamma) / (snr + 1 if v_prediction else snr)
            loss = loss * weight
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        per_sample = self.per_sample_loss(batch)
        n = int(batch["instance_count"])
        instance = per_sample[:n].mean()
        loss = instance
        if len(per_sample) > n:
            prior = per_sample[n:].mean()
            loss = instance + self.cfg.prior_loss_weight * prior
            self.log("train/prior_loss", prior)
        self.log("train/instance_loss", instance)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def configure_optimizers(self):
        cfg = self.cfg
        lr = cfg.learning_rate
        if cfg.scale_lr:
            lr *= cfg.train_batch_size * cfg.gradient_accumulation_steps * self.trainer.world_size
        optimizer_class = eight_bit_adamw() if cfg.use_8bit_adam else torch.optim.AdamW
        optimizer = optimizer_class(self.trainable_parameters(), lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                    weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                  num_training_steps=cfg.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
