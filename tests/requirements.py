"""What some tests need from the machine, and what happens when it is missing.

`./test.sh` installs every such thing (node-llama-cpp, the Gemma test package) or relies on what each
machine of this kind has (openssl, a tmpfs at /dev/shm). On a developer's machine a missing one skips the
test and says why; under CI (CI is set) it fails instead, so a broken install can never pass as a skip.
"""

from __future__ import annotations

import os

import pytest


def require(available: bool, what: str) -> None:
    """Go on when `available`; else skip, or fail under CI, naming `what` is missing and how to get it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} (./test.sh or this machine should provide it)")
    pytest.skip(what)
