"""DreamBooth (Ruiz et al. 2022): teach a text-to-image model a subject from a few images."""
