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
collections: 1.8 of the gateway's 8.2 CPU-seconds. Considering one about
every 700,000 such allocations instead (the thresholds below) takes one in
that burst. Cyclic garbage that survives into the oldest generation
waits longer to be freed: the 700,000 allocations bound how much of it can
pile up. A closed socket is not such garbage: it is freed by reference
counting (see ``forget_tracebacks`` in the gateway's session module).

The young generation is collected every 10,000 container allocations (net
of frees) instead of every 700. Routing a read of pushes holds one list of
deferred frames per socket until the pass is over (see the gateway's
``Connection.defer``), and a busy delivery batch holds its commands as
tuples: with 700, a young collection ran in the middle of most such passes
and visited everything they held. At 5,000 fan-out messages a second that
was 362 collections in 10 s, 0.23 CPU-s of the gateway's 5.4 (4 %), and 463
in delivery; with 10,000, none and one. The short-lived objects of a pass
are freed by reference counting before the next collection comes. The two
older generations keep their distance in allocations: a middle collection
every tenth young one (CPython's default), and a chance of a full one every
seventh middle one, which keeps it about 700,000 allocations apart.

What exists once start-up is over (modules, classes, functions, the app and
its clients: about 60,000 objects in each service) is never garbage, so it is
frozen: left out of every later collection, which then visits only what
connections and traffic create.
"""

from __future__ import annotations

import gc

from aiohttp import web

# Container allocations (net of frees) between two young collections
# (CPython's default is 700).
YOUNG = 10_000
# Middle-generation collections between two chances of a full collection
# (CPython's default is 10): about 700,000 allocations with YOUNG and the
# default ten young collections per middle one.
FULL_EVERY = 7


def tune() -> None:
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, FULL_EVERY)


async def freeze_startup(_: web.Application) -> None:
    """The last start-up hook: collect start-up's own garbage, then freeze the rest."""
    gc.collect()
    gc.freeze()
