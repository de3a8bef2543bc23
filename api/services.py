"""What the API's handlers and resolvers share: one instance of each client, built at start-up."""

from __future__ import annotations

import dataclasses

from api.auth import Authenticator
from api.authz import Authorizer
from api.events import EventHub
from api.persisted import PersistedQueries
from api.publish import SignalPublisher
from api.ratelimit import TokenBuckets
from api.scores import ScoreReader
from api.switches import OperationGate
from api.tenant_redis import TenantRedisUsers
from api.webhooks import ReplayGuard
from core.settings import Settings

__all__ = ["Services"]


@dataclasses.dataclass(slots=True)
class Services:
    """The API's clients and policies (one per process)."""

    settings: Settings
    auth: Authenticator
    authz: Authorizer
    scores: ScoreReader
    publisher: SignalPublisher
    hub: EventHub
    persisted: PersistedQueries
    buckets: TokenBuckets
    #: Signed pushes already accepted, in Redis (:mod:`api.webhooks`).
    replays: ReplayGuard
    #: The operation kill switches (:mod:`api.switches`).
    operations: OperationGate
    #: The tenants' Redis users the reads log in as (``None``: ``stores.redis_tenant_acl`` off).
    users: TenantRedisUsers | None = None

    async def close(self) -> None:
        await self.hub.close()
        await self.replays.close()
        await self.scores.close()
        if self.users is not None:
            await self.users.close()
        await self.auth.close()
        self.publisher.close()
