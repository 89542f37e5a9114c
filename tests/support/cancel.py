"""Cancel a service loop at many moments: it must end every time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any


async def cancel_at_random_moments(
    start: Callable[[], Coroutine[Any, Any, Any]], times: int = 200, seed: int = 7
) -> None:
    """Start the loop, cancel it within its first 10 ms, ``times`` times over; each
    must end, cancelled, within 3 s (a cancel Python 3.11 lost would keep it going)."""
    rng = random.Random(seed)
    for attempt in range(times):
        task = asyncio.create_task(start())
        await asyncio.sleep(rng.random() * 0.01)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        assert done, f"the loop went on after cancel number {attempt + 1}"
        assert task.cancelled(), f"the loop ended without the cancel: {task!r}"
