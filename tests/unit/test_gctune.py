"""The collector settings every service starts with (shared.gctune)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from aiohttp import web

from shared import gctune


class _Node:
    me: _Node


def test_collections_are_spaced_out_and_startup_is_frozen() -> None:
    before = gc.get_threshold()
    try:
        gctune.tune()
        young, middle, full = gc.get_threshold()
        assert young == gctune.YOUNG
        assert middle == before[1]  # ten young collections per middle one, as by default
        assert full == gctune.FULL_EVERY
        # A chance of a full collection stays about 700,000 allocations apart.
        assert 600_000 <= young * middle * full <= 800_000
        garbage = _Node()
        garbage.me = garbage  # a cycle start-up left behind
        gone = weakref.ref(garbage)
        del garbage
        asyncio.run(gctune.freeze_startup(web.Application()))
        # What was alive is frozen; start-up's own cyclic garbage was freed first.
        assert gc.get_freeze_count() > 1000
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
