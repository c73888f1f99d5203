"""culturegan: GAN style transfer between cultural art styles, as an MLOps pipeline."""

__version__ = "0.1.0"
