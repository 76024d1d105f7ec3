"""A fake Hugging Face Hub (real HTTP on 127.0.0.1) for tests; see ``server.py`` and ``fixtures.py``."""

from .server import FakeHub, FakeRepo, RecordedRequest

__all__ = ["FakeHub", "FakeRepo", "RecordedRequest"]
