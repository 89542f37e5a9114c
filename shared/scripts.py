"""Lua scripts live in ``shared/lua/*.lua``; each is loaded once and run by SHA.

redis-py's Script object retries with the body on NOSCRIPT, so a Redis
restart (script cache emptied) is handled transparently.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from shared.command_conn import CommandConnection
from shared.redis_client import RedisClient

LUA_DIR = Path(__file__).with_name("lua")

Op = tuple[str, tuple[Any, ...], dict[str, Any]]  # a pipeline method, its args and kwargs


@cache
def script_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


_loaded: weakref.WeakKeyDictionary[RedisClient, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def load_script(client: RedisClient, name: str) -> AsyncScript:
    """The client's script object for ``name``, made once (it hashes the source)."""
    return _register(client, name, lambda: script_source(name))


def load_script_with(
    client: RedisClient, name: str, function: str, of: str, params: str = ""
) -> AsyncScript:
    """As ``load_script``, with script ``of`` wrapped as the local Lua ``function``
    (taking ``params``, "a, b") ahead of ``name`` (its ``return`` then returns
    from the function): one script's logic used by another without a copy."""
    return _register(
        client,
        name,
        lambda: (
            f"local function {function}({params})\n{script_source(of)}\nend\n{script_source(name)}"
        ),
    )


def _register(client: RedisClient, name: str, source: Callable[[], str]) -> AsyncScript:
    scripts = _loaded.setdefault(client, {})
    script = scripts.get(name)
    if script is None:
        script = scripts[name] = client.register_script(source())
    return script


async def run_many(
    client: RedisClient,
    script: AsyncScript,
    calls: Sequence[tuple[list[str], list[Any]]],
    conn: CommandConnection | None = None,
) -> list[Any]:
    """Run one script for many key sets (see ``run_calls``)."""
    return await run_calls(client, [(script, k, a) for k, a in calls], conn)


async def run_calls(
    client: RedisClient,
    calls: Sequence[tuple[AsyncScript, list[str], list[Any]]],
    conn: CommandConnection | None = None,
) -> list[Any]:
    """Run script calls (script, keys, args) in order: pipelined on standalone Redis.

    redis-py refuses scripts inside a cluster pipeline (keys may live on
    different nodes), so on a cluster the calls go out concurrently instead:
    still one round trip of latency, spread over the nodes' connections, but
    in no set order (calls whose order matters go in separate batches).
    """
    if not calls:
        return []
    if isinstance(client, RedisCluster):
        return list(await asyncio.gather(*(script(keys=k, args=a) for script, k, a in calls)))
    return await execute(client, script_ops(calls), _scripts(calls), conn)


def script_ops(calls: Sequence[tuple[AsyncScript, list[str], list[Any]]]) -> list[Op]:
    """Script calls as EVALSHA pipeline ops (for ``execute``, on standalone Redis)."""
    return [
        ("evalsha", (script.sha, len(keys_), *keys_, *args), {}) for script, keys_, args in calls
    ]


def _scripts(calls: Sequence[tuple[AsyncScript, list[str], list[Any]]]) -> list[AsyncScript]:
    """The distinct scripts of ``calls`` (loaded again if Redis lost them)."""
    return list({id(script): script for script, _, _ in calls}.values())


async def _run(client: RedisClient, ops: Sequence[Op], conn: CommandConnection | None) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for name, args, kwargs in ops:
        getattr(pipe, name)(*args, **kwargs)
    if conn is not None:
        return await conn.execute(pipe, raise_on_error=False)
    return list(await pipe.execute(raise_on_error=False))


async def execute(
    client: RedisClient,
    ops: Sequence[Op],
    scripts: Sequence[AsyncScript] = (),
    conn: CommandConnection | None = None,
) -> list[Any]:
    """Run ``ops`` (pipeline method, args, kwargs) as one pipeline; raise the first error.

    Scripts go in as plain EVALSHA: redis-py's own script support in a
    pipeline asks SCRIPT EXISTS before every execute, a round trip per
    batch. Here a script the server does not know (Redis restarted) answers
    NOSCRIPT; it is loaded and only the commands that failed are run again.
    With ``conn`` (standalone Redis) the pipeline goes out on that held
    connection instead of one from the client's pool.
    """

    async def run(subset: Sequence[Op]) -> list[Any]:
        return await _run(client, subset, conn)

    return await _reloading(client, ops, scripts, run)


async def execute_raw(
    client: RedisClient,
    commands: Sequence[tuple[Any, ...]],
    scripts: Sequence[AsyncScript] = (),
    conn: CommandConnection | None = None,
) -> list[Any]:
    """As ``execute``, for commands given as their words (``("PUBLISH", channel, data)``).

    On a held connection they are packed and sent as they are, and the
    replies come back as Redis sent them (no redis-py reply callbacks): a
    caller that builds many commands per message skips redis-py's command
    methods and pipeline object. Without one they go through a pipeline.
    """

    return await settle_raw(client, commands, await send_raw(client, commands, conn), scripts, conn)


async def settle_raw(
    client: RedisClient,
    commands: Sequence[tuple[Any, ...]],
    replies: list[Any],
    scripts: Sequence[AsyncScript] = (),
    conn: CommandConnection | None = None,
    *,
    raise_first: bool = True,
) -> list[Any]:
    """The replies of ``commands`` sent already (``send_raw`` or another pipeline's
    write): scripts Redis did not know are loaded and those commands run again
    (on ``conn``); then the first error left is raised (or, without
    ``raise_first``, left in its place)."""

    async def run(subset: Sequence[tuple[Any, ...]]) -> list[Any]:
        return await send_raw(client, subset, conn)

    return await _reloading(client, commands, scripts, run, replies, raise_first)


async def send_raw(
    client: RedisClient, commands: Sequence[tuple[Any, ...]], conn: CommandConnection | None
) -> list[Any]:
    """Commands given as their words, in one pipeline; error replies in their place.

    On the held connection (standalone Redis) the replies are as Redis sent
    them; through the client's pool (a cluster) redis-py's reply callbacks
    apply and each command goes to its key's node.
    """
    if conn is not None:
        return await conn.send(commands, conn.timeout)
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))


T = TypeVar("T")


async def _reloading(
    client: RedisClient,
    items: Sequence[T],
    scripts: Sequence[AsyncScript],
    run: Callable[[Sequence[T]], Awaitable[list[Any]]],
    results: list[Any] | None = None,
    raise_first: bool = True,
) -> list[Any]:
    """``run(items)`` (unless its ``results`` are in); on NOSCRIPT load ``scripts``
    and run the failed items again."""
    if results is None:
        results = await run(items)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        for script in scripts:
            script.sha = await client.script_load(script.script)
        retried = await run([items[i] for i in missing])
        for i, result in zip(missing, retried, strict=True):
            results[i] = result
    if raise_first:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results
