"""The recipe that trains dreamloom-tiny-sd on ShapeWorld: VAE, then UNet with text encoder."""
