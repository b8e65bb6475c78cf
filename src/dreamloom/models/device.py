"""Pick the device and dtype: the fastest available, at a precision that is safe there."""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return torch.device("xpu")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """float16 on CUDA and MPS, bfloat16 on XPU, float32 on CPU (half is slow or unsupported there)."""
    if requested:
        try:
            return _DTYPES[requested.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {requested!r}; choose one of: float32, float16, bfloat16") from None
    return {"cuda": torch.float16, "mps": torch.float16, "xpu": torch.bfloat16}.get(device.type, torch.float32)
