"""Generation: txt2img, img2img and inpaint on one staged run path (``run``), with hooks at named stages (``hooks``)."""
