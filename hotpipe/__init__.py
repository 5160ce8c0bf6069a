"""hotpipe: run Hugging Face Diffusers checkpoints as a fleet service."""

__version__ = "0.1.0"
