"""Leases: a Redis lock only its holder can renew or release, with fencing.

Unlike the seed's lock manager, release is token-checked inside a script so
a process whose lease lapsed can never delete the lease of the next holder.
The fencing token grows with every new holder; work stamped with an older
token can be recognised as stale.
"""

from __future__ import annotations

import uuid

from shared import keys
from shared.redis_client import RedisClient
from shared.scripts import load_script


class Lease:
    """A named lease owned by this process (token is unique per instance)."""

    def __init__(self, client: RedisClient, resource: str, ttl_ms: int, owner: str = "") -> None:
        self.resource = resource
        self.ttl_ms = ttl_ms
        self.owner = owner or uuid.uuid4().hex
        self.fence = 0
        self._keys = [keys.lease_key(resource), keys.fence_key(resource)]
        self._acquire = load_script(client, "lease_acquire")
        self._release = load_script(client, "lease_release")

    async def acquire(self) -> bool:
        """Acquire or renew; True while this owner holds the lease."""
        fence = int(await self._acquire(keys=self._keys, args=[self.owner, self.ttl_ms]))
        self.fence = fence
        return fence > 0

    async def release(self) -> bool:
        released = int(await self._release(keys=self._keys[:1], args=[self.owner]))
        self.fence = 0
        return released == 1
