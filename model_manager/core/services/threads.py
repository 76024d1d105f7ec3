"""Blocking work in worker threads that a cancellation never abandons half done."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread_to_completion(func: Callable[..., T], *args: Any) -> T:
    """Run `func` in a worker thread. If the caller is cancelled, wait for `func` to finish before the
    cancellation goes on, so that whatever runs after the cancel (a lock's next holder, a cleanup of the
    files `func` writes) never overlaps it."""
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
