"""All Redis I/O of callgate: connections, the embedded server and one module per aggregate.

Only this package and ``gateway.streams`` import ``redis``; the rest of the gateway calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ClusterDownError, ReadOnlyError

from config.lines import Line, Pipeline, Provider
from config.settings import Settings
from config.subscriptions import Subscription
from config.triggers import Trigger
from gateway.keys import Keys
from gateway.stage_rules import StageRules
from gateway.store.backlog import Backlogs
from gateway.store.calls import Calls
from gateway.store.caps import Caps
from gateway.store.connection import Transactions
from gateway.store.consent import ConsentLedger
from gateway.store.conversations import Conversations
from gateway.store.dead_letters import DeadLetters
from gateway.store.entries import StageEntries
from gateway.store.feed import Feed
from gateway.store.inbox import Inbox
from gateway.store.invites import Invites
from gateway.store.items import Items
from gateway.store.jobs import Jobs
from gateway.store.limits import Limits
from gateway.store.outbox import Outbox
from gateway.store.records import Records, Snapshots
from gateway.store.timers import Timers
from gateway.store.usage import UsageStore


@dataclass(frozen=True)
class Store:
    # The client is for the stream consumers (gateway.streams); handlers use the aggregates.
    redis: Redis
    # MULTI/EXEC steps of the aggregates, on the node of their slot on a cluster.
    transactions: Transactions
    keys: Keys
    providers: Records[Provider]
    lines: Records[Line]
    pipelines: Records[Pipeline]
    items: Items
    inbox: Inbox
    calls: Calls
    timers: Timers
    triggers: Records[Trigger]
    dead_letters: DeadLetters
    feed: Feed
    jobs: Jobs
    limits: Limits
    backlogs: Backlogs
    consent: ConsentLedger
    conversations: Conversations
    invites: Invites
    caps: Caps
    subscriptions: Records[Subscription]
    outbox: Outbox
    usage: UsageStore
    stage_rules: Records[StageRules]
    stage_entries: StageEntries

    @classmethod
    def open(cls, redis: Redis, settings: Settings, snapshots: Snapshots) -> Store:
        """A store on ``redis``; stores of one process share ``snapshots`` of admin records."""
        keys = Keys(settings.key_prefix, settings.partitions)
        outbox = Outbox(redis, keys, settings.dead_letters_max)
        transactions = Transactions(redis)
        stage_entries = StageEntries(redis, transactions, keys)
        return cls(
            redis=redis,
            transactions=transactions,
            keys=keys,
            providers=Records(redis, keys.providers, Provider, snapshots),
            lines=Records(redis, keys.lines, Line, snapshots),
            pipelines=Records(redis, keys.pipelines, Pipeline, snapshots),
            items=Items(redis, transactions, keys, stage_entries, settings.timeline_max, settings.lead_ttl_seconds),
            inbox=Inbox(redis, keys, settings.dedup_ttl_seconds, settings.feed_max),
            calls=Calls(redis, transactions, keys),
            timers=Timers(redis, keys),
            triggers=Records(redis, keys.triggers, Trigger, snapshots),
            dead_letters=DeadLetters(redis, keys),
            feed=Feed(redis, keys, settings.feed_max),
            jobs=Jobs(
                redis, transactions, keys, settings.timeline_max, settings.dedup_ttl_seconds, settings.dead_letters_max
            ),
            limits=Limits(redis, keys),
            backlogs=Backlogs(redis, keys),
            consent=ConsentLedger(redis, keys),
            conversations=Conversations(redis, transactions, keys),
            invites=Invites(redis, transactions, keys),
            caps=Caps(redis, keys),
            subscriptions=Records(redis, keys.subscriptions, Subscription, snapshots),
            outbox=outbox,
            usage=UsageStore(redis, keys),
            stage_rules=Records(redis, keys.stage_rules, StageRules, snapshots),
            stage_entries=stage_entries,
        )

    async def aclose(self) -> None:
        """Close the clients the store made of its own (those of a cluster's nodes); the
        caller closes the one it gave."""
        await self.transactions.aclose()

    async def ping(self) -> None:
        """Raise one of ``connection.UNAVAILABLE`` unless Redis answers and takes writes: a
        single Redis is a master (a replica answers PING but refuses every write); a cluster
        is up (its nodes answer PING while every keyed command meets CLUSTERDOWN)."""
        if not isinstance(self.redis, RedisCluster):
            if str((await self.redis.role())[0]) != "master":
                raise ReadOnlyError("Redis is a replica: it refuses writes until it is a master again")
        elif str((await self.redis.cluster_info()).get("cluster_state")) != "ok":
            raise ClusterDownError("The cluster is down")
