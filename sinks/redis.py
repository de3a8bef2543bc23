"""Redis hot store: each tenant's current score, a capped stream of recent signals, live events.

Keys (``<t>`` is the tenant id; build them with :func:`score_key` and its siblings):

=============================  ===============================================================
``tenant:<t>:score``           HASH ``score`` (the double, ``repr``), ``score_2dp``, ``status``,
                               ``updated_at`` (ISO 8601 UTC), ``seq``, ``provenance_id``,
                               ``provenance`` (JSON: topic, partition, offset, schema_version,
                               input_hash). TTL ``ttl_seconds``, renewed on every applied change.
``tenant:<t>:signals``         STREAM of recent signals (``signal_id``, ``type``, ``value``,
                               ``weight``, ``source``, ``ts``, ``provenance_id``), trimmed to about
                               ``stream_max`` entries (``MAXLEN ~``).
``tenant:<t>:signals:applied`` HASH ``"<topic>/<partition>"`` -> highest Kafka offset in the stream.
                               Stream and marks share a TTL taken from the tenant's retention tag.
``tenant:<t>:events``          pub/sub channel: one JSON message per *applied* change (below).
=============================  ===============================================================

A replay into the serving stores (``igflow replay --into NS``) writes the same keys and channels
under a scratch prefix (``stores.key_prefix``, ``replay:NS:``): ``replay:NS:tenant:<t>:score``.
The default prefix is empty: the names above, exactly.

Exactly-once effect over Bytewax's at-least-once delivery: a score change is applied only if its
``seq`` (the tenant's deterministic change number) is greater than the stored one, and a signal
only if its offset is above the mark of its (tenant, topic, partition); the items of one tenant
reach the sink in offset order per partition. So an older change never overwrites a newer one,
and a batch replayed after a crash or a timed-out write changes nothing and publishes nothing.

Two lanes (:class:`~sinks.serving.PipelinedPartition` ``scores``): the score changes are written
by a writer and connection of their own, beside the signals' (a tenant's changes are guarded by
``seq`` and its signals by the offset marks, so no write orders one kind against the other), so
a change does not wait for the chunk of signals being written when it came. Each kind keeps its
order per tenant; across kinds there is no order any more: a tenant's score event may be
published before the events of the signals that made it (the API coalesces each kind apart).

Atomicity: one Lua script applies a whole batch (guards, writes, TTLs and ``PUBLISH``) in one
round trip; Redis runs it without interleaving other commands, so no reader sees half a batch,
and a retry of a batch whose reply was lost (a timeout) is a no-op. Redis does not roll back a
script that fails part-way (``WRONGTYPE`` on a key someone else wrote); that error is not
transient, it stops the flow, and the guards make the resumed run skip what had landed.
The script is sent with ``EVAL`` on the first write (which caches it), then by ``EVALSHA``;
after a ``NOSCRIPT`` (a restarted or flushed server) the writer falls back to ``EVAL``.

Redis Cluster: the script declares every key it touches in ``KEYS``, but one call may span
tenants, so on a cluster the keys would have to share a hash slot: name them with a hash tag
(``tenant:{<t>}:score``) and send one call per tenant (group each batch by tenant), and publish
with ``SPUBLISH``. We run a single node, where none of that is needed.

Score event: ``{"kind": "score", "tenantId", "score", "status", "updatedAt", "seq"}``; signal event:
``{"kind": "signal", "id", "type", "value", "weight", "source", "ts"}`` (the GraphQL ``Signal`` and
``CoherenceScore`` field names). A null ``weight`` is served as 1.0, the contract's default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import redis
import redis.exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import _native
from core.records import TAGGED_READERS, ScoreChange, Tagged
from core.redis_tls import redis_client
from core.store_keys import applied_key, events_channel, score_key, signals_key
from sinks.serving import PipelinedPartition, ServingSink

__all__ = [
    "RedisSink",
    "RedisWriter",
    "applied_key",
    "events_channel",
    "prefix_in_use",
    "retention_seconds",
    "score_key",
    "signals_key",
    "transient",
]

log = logging.getLogger(__name__)

#: Applies one batch. KEYS: every key the batch touches. ARGV[1]: the stream's MAXLEN (approximate
#: trim); ARGV[2]: a JSON array of operations, in batch order, all values strings:
#:   score:  ["s", score key index, seq, ttl ms, channel, event, field, value, ...]
#:   signal: ["g", stream key index, marks key index, "topic/partition", offset, ttl ms,
#:            channel, event, field, value, ...]
#: Returns one character per operation: "1" applied, "0" skipped by its guard. Numbers travel as
#: strings because Lua would print a large one in exponent form; ``tonumber`` is exact below 2**53.
#: TTLs are set once per key at the end (the last applied operation's TTL wins).
_SCRIPT = """
local ops = cjson.decode(ARGV[2])
local ttl = {}
local out = {}
for i, op in ipairs(ops) do
  out[i] = '0'
  if op[1] == 's' then
    local key = KEYS[tonumber(op[2])]
    local held = redis.call('HGET', key, 'seq')
    if not held or tonumber(op[3]) > tonumber(held) then
      redis.call('HSET', key, unpack(op, 7))
      ttl[key] = op[4]
      redis.call('PUBLISH', op[5], op[6])
      out[i] = '1'
    end
  else
    local stream, marks = KEYS[tonumber(op[2])], KEYS[tonumber(op[3])]
    local held = redis.call('HGET', marks, op[4])
    if not held or tonumber(op[5]) > tonumber(held) then
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', unpack(op, 9))
      redis.call('HSET', marks, op[4], op[5])
      ttl[stream] = op[6]
      ttl[marks] = op[6]
      redis.call('PUBLISH', op[7], op[8])
      out[i] = '1'
    end
  end
end
for key, ms in pairs(ttl) do
  redis.call('PEXPIRE', key, ms)
end
return table.concat(out)
"""
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()

_RETENTION_DAYS = re.compile(r"(\d+)d$")


def prefix_in_use(url: str, prefix: str, *, timeout_s: float = 5.0) -> bool:
    """Whether any key starting with ``prefix`` exists (a replay refuses such a scratch prefix).

    ``SCAN`` with a ``MATCH`` pattern (the prefix's glob characters escaped), so it never blocks
    the server; stops at the first key found. An empty prefix is refused: every key matches it.
    """
    if not prefix:
        msg = "prefix_in_use needs a non-empty prefix"
        raise ValueError(msg)
    pattern = re.sub(r"([*?\\\[\]^])", r"\\\1", prefix) + "*"
    client = redis_client(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        for _key in client.scan_iter(match=pattern, count=1000):
            return True
        return False
    finally:
        client.close()


def retention_seconds(retention: str, default: float) -> float:
    """Seconds a retention tag keeps data: ``"standard-90d"`` -> 90 days; else ``default``."""
    match = _RETENTION_DAYS.search(retention)
    if match is None or int(match.group(1)) == 0:
        return default
    return int(match.group(1)) * 86400.0


def transient(exc: BaseException) -> bool:
    """Whether a failed write is worth retrying: the server is unreachable, paused, loading,
    busy, failing over or out of memory for now. Wrong credentials or a bad command are not."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return False
    if isinstance(
        exc,
        rx.ConnectionError  # includes BusyLoadingError (LOADING) and MaxConnectionsError
        | rx.TimeoutError
        | rx.TryAgainError
        | rx.ClusterDownError
        | rx.ReadOnlyError  # a replica that has not been promoted yet
        | rx.OutOfMemoryError
        | ConnectionError
        | TimeoutError,
    ):
        return True
    # A long script of another client: "BUSY Redis is busy running a script".
    return isinstance(exc, rx.ResponseError) and str(exc).startswith("BUSY")


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        msg = f"naive datetime {value!r}: records carry timezone-aware UTC times"
        raise ValueError(msg)
    return value.astimezone(UTC).isoformat()


#: The reference: ``json.dumps`` with compact separators (what :func:`_json` writes, exactly).
_reference_json = json.JSONEncoder(separators=(",", ":")).encode

#: The C encoder ``JSONEncoder.encode`` builds on every call (with its float closure and
#: circular-reference dict), built once: half the cost of a call (3.3 against 6.5 µs for a
#: signal's event, measured on the loaded machine). No circular check: the values are fresh
#: dicts and lists of strings and numbers. ``tests/unit/test_redis_batch.py`` checks it against
#: :data:`_reference_json`.
_make_encoder: Callable[..., Callable[[object, int], list[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_encode = (
    None
    if _make_encoder is None
    else _make_encoder(
        None,  # markers: no circular check
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as json.dumps
    )
)


def _json(value: object) -> str:
    """``value`` as compact JSON, as :data:`_reference_json` writes it."""
    if _encode is None:  # no C accelerator (not CPython's): the encoder's own path
        return _reference_json(value)
    return "".join(_encode(value, 0))


class _Batch:
    """The script's arguments for one batch: declared keys and operations (each operation's
    JSON in ``parts``, in batch order: the script's ``ARGV[2]`` is their array)."""

    def __init__(self, stream_max: int, ttl_ms: int, prefix: str) -> None:
        self._stream_max = stream_max
        self._ttl_ms = ttl_ms
        self._prefix = prefix
        self.keys: dict[str, int] = {}
        #: The operations' JSON texts (a run of signals written in C is one text, its
        #: operations joined by commas).
        self.parts: list[str] = []
        self._retention_ms: dict[str, str] = {}
        #: Per tenant: its stream's and marks' key indexes and its channel (named once a batch).
        self._signal_keys: dict[str, tuple[str, str, str]] = {}

    def _key(self, name: str) -> str:
        index = self.keys.setdefault(name, len(self.keys) + 1)  # Lua indexes from 1
        return str(index)

    def score(self, change: ScoreChange) -> None:
        tenant = change.tenant_id
        p = change.provenance
        updated_at = _iso(change.updated_at)
        provenance = {
            "topic": p.topic,
            "partition": p.kafka_partition,
            "offset": p.kafka_offset,
            "schema_version": p.schema_version,
            "input_hash": p.input_hash,
        }
        event = {
            "kind": "score",
            "tenantId": tenant,
            "score": change.score,
            "status": change.status,
            "updatedAt": updated_at,
            "seq": change.seq,
        }
        self.parts.append(
            _json(
                [
                    "s",
                    self._key(score_key(tenant, prefix=self._prefix)),
                    str(change.seq),
                    str(self._ttl_ms),
                    events_channel(tenant, prefix=self._prefix),
                    _json(event),
                    *("score", repr(change.score)),
                    *("score_2dp", str(change.score_2dp)),
                    *("status", change.status),
                    *("updated_at", updated_at),
                    *("seq", str(change.seq)),
                    *("provenance_id", change.provenance_id),
                    *("provenance", _json(provenance)),
                ]
            )
        )

    def signals(self, items: list[Tagged]) -> None:
        """:meth:`signal` of each of ``items``, in order: in C (``core._native.redis_signals``,
        the same JSON text) for the common signal (plain ASCII strings, finite floats, a time
        in UTC), by :meth:`signal` (the reference) for any other."""
        at, n = 0, len(items)
        while at < n:
            at = _native.redis_signals(
                items,
                at,
                TAGGED_READERS,
                self._signal_keys,
                self._tenant_keys,
                self._retention_ms,
                self._retention_ttl,
                self.parts,
            )
            if at < n:
                self.signal(items[at])
                at += 1

    def _tenant_keys(self, tenant: str) -> tuple[str, str, str]:
        """The tenant's stream and marks key indexes and its channel, named (in that order)
        the first time in the batch."""
        keys = self._signal_keys.get(tenant)
        if keys is None:
            keys = self._signal_keys[tenant] = (
                self._key(signals_key(tenant, prefix=self._prefix)),
                self._key(applied_key(tenant, prefix=self._prefix)),
                events_channel(tenant, prefix=self._prefix),
            )
        return keys

    def _retention_ttl(self, retention: str) -> str:
        """The TTL in ms of a retention tag's signals (as text), kept per batch."""
        ttl_ms = self._retention_ms.get(retention)
        if ttl_ms is None:
            seconds = retention_seconds(retention, self._ttl_ms / 1000)
            ttl_ms = self._retention_ms[retention] = str(round(seconds * 1000))
        return ttl_ms

    def signal(self, item: Tagged) -> None:
        s = item.signal
        p = item.provenance
        ttl_ms = self._retention_ttl(item.tags.retention)
        weight = 1.0 if s.weight is None else s.weight
        ts = _iso(s.ts)
        event = {
            "kind": "signal",
            "id": s.signal_id,
            "type": s.type,
            "value": s.value,
            "weight": weight,
            "source": s.source,
            "ts": ts,
        }
        stream, marks, channel = self._tenant_keys(s.tenant_id)
        self.parts.append(
            _json(
                [
                    "g",
                    stream,
                    marks,
                    f"{p.topic}/{p.kafka_partition}",
                    str(p.kafka_offset),
                    ttl_ms,
                    channel,
                    _json(event),
                    *("signal_id", s.signal_id),
                    *("type", s.type),
                    *("value", repr(s.value)),
                    *("weight", repr(weight)),
                    *("source", s.source),
                    *("ts", ts),
                    *("provenance_id", item.provenance_id),
                ]
            )
        )

    def args(self) -> list[str]:
        return [*self.keys, str(self._stream_max), "[" + ",".join(self.parts) + "]"]


class RedisWriter:
    """Applies batches of score changes and signals to Redis, idempotently, one call per batch.

    Engine-independent. Connects lazily on the first write; redis-py's own retries are off
    (a failed call raises at once, so :func:`core.retry.write_with_retry` is the one retry
    policy), and socket timeouts make a paused or unreachable server raise ``TimeoutError``
    instead of hanging. Not thread-safe: one writer per worker. ``key_prefix`` is prepended to
    every key and channel (a replay's scratch prefix; empty: the real names).
    """

    def __init__(
        self,
        url: str,
        *,
        stream_max: int,
        ttl_seconds: float,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        key_prefix: str = "",
    ) -> None:
        if stream_max < 1:
            msg = f"stream_max must be at least 1, got {stream_max}"
            raise ValueError(msg)
        if not ttl_seconds >= 0.001:
            msg = f"ttl_seconds must be at least 1 ms, got {ttl_seconds}"
            raise ValueError(msg)
        self._url = url
        self._prefix = key_prefix
        self._stream_max = stream_max
        self._ttl_ms = round(ttl_seconds * 1000)
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._client: redis.Redis | None = None
        self._cached = False  # the server has the script (we sent it with EVAL)

    def write(self, batch: Sequence[ScoreChange | Tagged]) -> None:
        """Apply ``batch`` atomically in one round trip; items failing their guard are skipped.

        Raises redis-py's exceptions (classify them with :func:`transient`); writing the same
        batch again is always safe.
        """
        if not batch:
            return
        args = _Batch(self._stream_max, self._ttl_ms, self._prefix)
        signals: list[Tagged] = []  # a run of signals, written together
        for item in batch:
            if isinstance(item, ScoreChange):
                if signals:
                    args.signals(signals)
                    signals = []
                args.score(item)
            else:
                signals.append(item)
        if signals:
            args.signals(signals)
        applied = self._run(len(args.keys), args.args())
        log.debug(
            "redis: applied %d of %d items",
            applied.count("1"),
            len(batch),
            extra={"op": "sink.redis", "rows": applied.count("1")},
        )

    def _run(self, numkeys: int, args: list[str]) -> str:
        client = self._connect()
        if self._cached:
            try:
                result = client.evalsha(_SHA, numkeys, *args)
            except rx.NoScriptError:  # restarted or SCRIPT FLUSHed: nothing ran
                result = client.eval(_SCRIPT, numkeys, *args)
        else:
            result = client.eval(_SCRIPT, numkeys, *args)
            self._cached = True
        return bytes(result).decode() if isinstance(result, bytes) else str(result)

    def _connect(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(
                self._url,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._connect_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    def close(self) -> None:
        """Close the connection pool (the next write reconnects)."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


class RedisSink(ServingSink[ScoreChange | Tagged]):
    """Bytewax sink writing score changes and tagged signals to the Redis hot store.

    Its partition has two :class:`RedisWriter` on writer threads of their own, one for the
    score changes, one for the signals (:class:`~sinks.serving.PipelinedPartition`, module
    docstring): items are written in chunks of
    ``stores.batch_size``, each atomically with retries (``stores.retry_*``); a chunk that still
    fails goes to the DLQ topic as ``SINK_UNAVAILABLE`` and the flow goes on. Items of one tenant
    must arrive in offset order per Kafka partition (feed it with :func:`~sinks.serving.serve`
    from a stream keyed by tenant upstream), which is what the offset and ``seq`` guards rely on.
    """

    def build_part(
        self, step_id: str, for_part: str, resume_state: list[ScoreChange | Tagged] | None
    ) -> PipelinedPartition[ScoreChange | Tagged]:
        stores = self._stores

        def writer() -> RedisWriter:
            return RedisWriter(
                stores.redis_url,
                stream_max=stores.redis_stream_max,
                ttl_seconds=stores.redis_ttl_seconds,
                key_prefix=stores.key_prefix,
            )

        signals, scores = writer(), writer()

        def close() -> None:
            try:
                signals.close()
            finally:
                scores.close()

        # The score changes on a lane of their own: a tenant's changes and its signals are
        # guarded apart (``seq``, the offset marks), so neither waits for the other's writes.
        return PipelinedPartition(
            "redis",
            signals,
            stores,
            self._dead_letters,
            transient=transient,
            close=close,
            resume=resume_state,
            scores=scores,
        )
