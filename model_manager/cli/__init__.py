"""The `model-manager` command line: `serve` runs the service, every other command talks to it over HTTP."""

from model_manager.cli.app import app, main

__all__ = ["app", "main"]
