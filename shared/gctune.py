"""Cyclic garbage collection for a process that holds many connections.

A full collection visits every object the collector tracks and stops the
event loop meanwhile. A gateway with 10,000 sockets tracks about 660,000
(some sixty per socket: aiohttp's two tasks and the eight coroutines
suspended under each handler, their futures, dicts and lists), and one full
collection took 0.37-0.45 s of CPU there: every socket of the gateway waits
that long.

CPython (3.11) considers a full collection after every tenth collection of
the middle generation, about every 70,000 container objects allocated and
not freed, and takes it when the objects promoted to the oldest generation
since the last one are more than a quarter of those it holds. Connections
are exactly such objects, so during 10,000 connects it took eight full
collections: 1.8 of the gateway's 8.2 CPU-seconds. Considering one every
hundredth middle collection instead (about 700,000 such allocations) takes
one in that burst. The young generations keep their thresholds: their
collections are short, and the cycles of short-lived objects are still freed
as soon as before. Cyclic garbage that survives into the oldest generation
waits longer to be freed: the 700,000 allocations bound how much of it can
pile up. A closed socket is not such garbage: it is freed by reference
counting (see ``forget_tracebacks`` in the gateway's session module).

What exists once start-up is over (modules, classes, functions, the app and
its clients: about 60,000 objects in each service) is never garbage, so it is
frozen: left out of every later collection, which then visits only what
connections and traffic create.
"""

from __future__ import annotations

import gc

from aiohttp import web

# Middle-generation collections between two chances of a full collection
# (CPython's default is 10).
FULL_EVERY = 100


def tune() -> None:
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)


async def freeze_startup(_: web.Application) -> None:
    """The last start-up hook: collect start-up's own garbage, then freeze the rest."""
    gc.collect()
    gc.freeze()
