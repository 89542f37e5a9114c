"""A loop that ends only when its task is cancelled must see the cancel.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result instead of
raising ``CancelledError`` when its task is cancelled in the same pass of the
event loop in which the awaited call completes (python/cpython#86296; 3.12
rewrote ``wait_for`` on ``asyncio.timeout``). redis-py wraps every socket
write and read in ``wait_for`` (``socket_timeout``), so a periodic loop
cancelled while a command's reply arrives goes on as if nothing happened,
and the service that awaits it at shutdown waits for good (found when the
metrics service's lost-events loop, cancelled in a test, never ended). The
task still counts the request (``Task.cancelling()``): a loop that checks at
every turn ends at the next one. The services' own waits use
``asyncio.timeout``, which keeps the cancel (ruff bans ``asyncio.wait_for``
outside tests and bench); redis-py's cannot be changed from here.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and the cancel was lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
