"""model-manager: find, download and keep GGUF models from the Hugging Face Hub."""

__version__ = "0.1.0"
