"""The runtime seam: a load plan that decides where and how each component's weights live and
run, and the backends that load a registry entry and apply a plan (diffusers/PyTorch first)."""
