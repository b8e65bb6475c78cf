"""Models: the registry of what is installed, loading it safely, and placing it on a device."""
