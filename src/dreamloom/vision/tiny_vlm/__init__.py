"""dreamloom-tiny-vlm: a tiny Llama 4 (MoE, early-fusion vision) trained on ShapeWorld; its recipe and measures."""
