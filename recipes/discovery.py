"""Service discovery: ``Registration`` (an instance announces itself under its session's
lease), ``Discovery`` (list, pick, watch) and ``ServiceWatch`` (a live set of instances
with join / leave / update events).

::

    with Client() as kv, Session(kv, ttl=5) as session:
        with Registration(session, "api", "api-1", "10.0.0.7:8080", {"zone": "a"}):
            ...                                            # registered while inside

    with Client() as kv, Discovery(kv) as discovery:
        discovery.list("api")                             # [Instance(...), ...]
        discovery.pick("api", "round_robin")              # or "random"; None if none
        with discovery.watch("api") as instances:         # a live set
            for event in instances:                       # InstanceEvent(kind, instance, revision)
                ...

Keys: ``<prefix><service>/<instance id>`` (``prefix`` defaults to ``services/``) holding
JSON ``{"address": ..., "metadata": {...}}``, attached to the registering session's
lease. A key exists only while its lease lives, so every listed instance is one whose
process kept its session alive: when the process dies, the lease expires after its TTL
and the cluster deletes the key - watchers see the instance leave within the TTL.

``ServiceWatch`` starts from one read of the service's keys (one revision) and follows a
watch from the next revision: ``instances`` is always the set at one revision; events
(``JOINED`` / ``UPDATED`` / ``LEFT``) arrive in revision order, by iteration (blocking or
``async for``), ``get(timeout)``, or listeners (run on the recipes' event loop thread;
they must not block). Its own ``pick`` uses that set without a round trip.

What happens on:

- **Session loss** (registering side): the key goes with the lease (it is revoked at
  once when the loss is detected); ``Registration.lost`` is raised and ``on_lost``
  called before the lease can have expired on the servers. The same happens if the key
  is deleted or taken over (``replace=True``) by someone else. Register again with a
  new session.
- **Client crash**: the lease expires after its TTL; the instance leaves every view.
- **Compaction** under a ``ServiceWatch``: it re-reads the service and reports the
  difference as events (nothing is skipped silently).
- **Leader failover / reconnects**: writes are retried exactly-once, watches resume
  from the last delivered revision; a watch that gives up is re-created in the
  background from where it stopped, keeping its set meanwhile.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import enum
import functools
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeAlias

import attrs

from pnyx.clients import (
    AsyncClient,
    AsyncWatch,
    Client,
    CompactedError,
    EventType,
    GetResult,
    KeyValue,
    WatchBatch,
    cmp,
    op,
)
from pnyx.core import errors
from pnyx.recipes._base import Signal, deadline_after, library_logger, remaining, run_callback
from pnyx.recipes._source import (
    MAX_RESUME_PAUSE,
    RETRY_PAUSE,
    PrefixFollower,
    Source,
    key_prefix,
    prefix_end,
    stop_follower,
)
from pnyx.recipes.session import Session

__all__ = [
    "Discovery",
    "Instance",
    "InstanceChange",
    "InstanceEvent",
    "Registration",
    "ServiceWatch",
]

_log = library_logger("pnyx.recipes.discovery")

DEFAULT_PREFIX = "services/"
MAX_PENDING_EVENTS = 10_000
"""Events a ``ServiceWatch`` keeps for a consumer that does not read them (the oldest
are dropped beyond this, with a warning; ``instances`` stays exact)."""

Strategy: TypeAlias = Literal["random", "round_robin"]


def _check_part(value: str, what: str) -> str:
    if not value or "/" in value:
        raise errors.InvalidRequestError(f"a {what} must be non-empty and without '/': {value!r}")
    return value


def _encode(address: str, metadata: Mapping[str, Any] | None) -> bytes:
    return json.dumps(
        {"address": address, "metadata": dict(metadata or {})}, sort_keys=True
    ).encode("utf-8")


@attrs.frozen
class Instance:
    """One registered instance of a service."""

    service: str
    id: str
    address: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    lease: int = 0
    revision: int = 0
    """When it registered (its key's create revision)."""
    mod_revision: int = 0
    """When it last changed (registration or update)."""

    @classmethod
    def from_kv(cls, service: str, instance_id: str, kv: KeyValue) -> Instance:
        """Decode a registration key's value; a foreign value is kept as the address."""
        address, metadata = kv.value.decode("utf-8", errors="replace"), {}
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            decoded = json.loads(kv.value)
            address = str(decoded["address"])
            metadata = dict(decoded.get("metadata") or {})
        return cls(
            service=service,
            id=instance_id,
            address=address,
            metadata=MappingProxyType(metadata),
            lease=kv.lease,
            revision=kv.create_revision,
            mod_revision=kv.mod_revision,
        )


class InstanceChange(enum.Enum):
    JOINED = "joined"
    UPDATED = "updated"
    LEFT = "left"


@attrs.frozen
class InstanceEvent:
    """An instance joined, changed its address or metadata, or left, at ``revision``."""

    kind: InstanceChange
    instance: Instance
    revision: int


def _first(result: object) -> KeyValue | None:
    if isinstance(result, GetResult) and result.kvs:
        return result.kvs[0]
    return None


# --------------------------------------------------------------------------- Registration


class Registration:
    """One instance registered under ``session``'s lease; see the module docstring.

    ``replace``: take over the key if another live lease holds this instance id (e.g.
    the previous run of a restarted process whose lease has not expired yet); by
    default that raises ``RecipeError``. ``on_lost``: called with the error when the
    registration is lost.
    """

    def __init__(
        self,
        session: Session,
        service: str,
        instance_id: str,
        address: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        prefix: str | bytes = DEFAULT_PREFIX,
        replace: bool = False,
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> None:
        self.service = _check_part(service, "service name")
        self.instance_id = _check_part(instance_id, "instance id")
        self.address = address
        self.metadata: Mapping[str, Any] = dict(metadata or {})
        self.key = key_prefix(prefix) + f"{service}/{instance_id}".encode()
        self.replace = replace
        self._session = session
        self._on_lost = on_lost
        self._revision = 0
        self._registered = False
        self._monitor: asyncio.Task[None] | None = None
        self._monitor_watch: AsyncWatch | None = None
        self._hook: Callable[[errors.PnyxError], object] | None = None
        self.lost = Signal()
        """Raised when the registration is lost; a fresh one per ``register``."""

    def __repr__(self) -> str:
        state = "registered" if self._registered else "not registered"
        return f"<Registration {self.service}/{self.instance_id} {state}>"

    @property
    def registered(self) -> bool:
        """Registered and not known lost."""
        return self._registered and not self.lost.is_set()

    @property
    def revision(self) -> int:
        """The revision of the registration (0 if not registered)."""
        return self._revision if self._registered else 0

    # ------------------------------------------------------------------ faces

    def register(self) -> Registration:
        """Put the instance's key (``with`` does this)."""
        self._session.runtime.call(self._register())
        return self

    def deregister(self) -> None:
        """Delete the key (only if it is still ours)."""
        self._session.runtime.call(self._deregister())

    def update(
        self, *, address: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Change the address and/or metadata (only while still registered: else
        ``SessionExpiredError``)."""
        self._session.runtime.call(self._update(address, metadata))

    def __enter__(self) -> Registration:
        return self.register()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.deregister()

    async def register_async(self) -> Registration:
        await self._session.runtime.call_async(self._register())
        return self

    async def deregister_async(self) -> None:
        await self._session.runtime.call_async(self._deregister())

    async def update_async(
        self, *, address: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        await self._session.runtime.call_async(self._update(address, metadata))

    async def __aenter__(self) -> Registration:
        return await self.register_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.deregister_async()

    # ------------------------------------------------------------------ logic

    def _kv(self) -> AsyncClient:
        return self._session.client

    async def _register(self) -> None:
        if self._registered:
            raise errors.RecipeError("already registered; deregister first")
        session = self._session
        session.check()
        session.claim(self.key, self)
        value = _encode(self.address, self.metadata)
        try:
            if self.replace:
                result = await self._kv().txn(
                    success=[op.put(self.key, value, lease=session.lease_id)]
                )
                self._revision = result.revision
            else:
                result = await self._kv().txn(
                    compare=[cmp.create(self.key) == 0],
                    success=[op.put(self.key, value, lease=session.lease_id)],
                    failure=[op.get(self.key)],
                )
                if result.succeeded:
                    self._revision = result.revision
                else:
                    existing = _first(result.responses[0])
                    if existing is None or existing.lease != session.lease_id:
                        raise errors.RecipeError(
                            f"instance {self.service}/{self.instance_id} is registered by "
                            "another live session (use replace=True to take it over)"
                        )
                    self._revision = existing.mod_revision
        except BaseException:
            session.unclaim(self.key, self)
            raise
        self.lost = Signal()
        if self._on_lost is not None:
            self.lost.add_callback(self._on_lost)
        self._registered = True
        self._start_monitor()

    def _lose(self, why: str, error_type: type[errors.RecipeError]) -> None:
        if self._registered:
            self.lost.set(error_type(f"registration {self.service}/{self.instance_id}: {why}"))

    def _start_monitor(self) -> None:
        session = self._session

        def on_end(error: errors.PnyxError) -> None:
            if not session.closed:
                self._lose(f"session lost ({error.message})", errors.SessionExpiredError)

        self._hook = on_end
        session.ended.add_callback(on_end)
        self._monitor = session.runtime.create_task(
            self._watch_own_key(), name=f"pnyx-registration-{self.instance_id}"
        )

    async def _stop_monitor(self) -> None:
        if self._hook is not None:
            self._session.ended.remove_callback(self._hook)
            self._hook = None
        task, self._monitor = self._monitor, None
        await stop_follower(task, self._monitor_watch)

    async def _watch_own_key(self) -> None:
        """Report loss when our key is deleted or taken over behind our back."""
        kv = self._kv()
        lease = self._session.lease_id
        revision = self._revision
        while self._registered and not self.lost.is_set():
            try:
                self._monitor_watch = kv.watch(self.key, start_revision=revision + 1)
                async with self._monitor_watch as watch:
                    async for batch in watch:
                        for event in batch.events:
                            if event.type == EventType.DELETE:
                                self._lose("its key was deleted", errors.SessionExpiredError)
                                return
                            if event.kv.lease != lease:
                                self._lose("taken over by another session", errors.RecipeError)
                                return
                        revision = batch.revision
                return  # closed
            except errors.PnyxError:
                if not self._registered:
                    return
                with contextlib.suppress(errors.PnyxError):
                    result = await kv.get(self.key)
                    current = _first(result)
                    if current is None:
                        self._lose("its key was deleted", errors.SessionExpiredError)
                        return
                    if current.lease != lease:
                        self._lose("taken over by another session", errors.RecipeError)
                        return
                    revision = result.revision
                await asyncio.sleep(RETRY_PAUSE)

    async def _deregister(self) -> None:
        if not self._registered:
            return
        await self._stop_monitor()
        self._registered = False
        self._session.unclaim(self.key, self)
        if self._session.ended.is_set():
            return  # the lease is gone or going, and the key with it
        await self._kv().txn(
            compare=[cmp.lease(self.key) == self._session.lease_id],
            success=[op.delete(self.key)],
            failure=[],
        )

    async def _update(self, address: str | None, metadata: Mapping[str, Any] | None) -> None:
        if not self.registered:
            raise errors.SessionExpiredError("not registered (or the registration was lost)")
        new_address = self.address if address is None else address
        new_metadata = self.metadata if metadata is None else dict(metadata)
        result = await self._kv().txn(
            compare=[cmp.lease(self.key) == self._session.lease_id],
            success=[
                op.put(self.key, _encode(new_address, new_metadata), lease=self._session.lease_id)
            ],
            failure=[],
        )
        if not result.succeeded:
            self._lose("its key is gone or taken over", errors.SessionExpiredError)
            raise errors.SessionExpiredError("the registration was lost")
        self.address, self.metadata = new_address, new_metadata


# --------------------------------------------------------------------------- Discovery


class Discovery:
    """Find instances of services; see the module docstring.

    ``source``: a ``Client``, ``AsyncClient`` or ``Session`` (needed for ``register``).
    ``rng``: the random generator of the ``random`` strategy (seed it for tests).
    """

    def __init__(
        self,
        source: Client | AsyncClient | Session,
        *,
        prefix: str | bytes = DEFAULT_PREFIX,
        rng: random.Random | None = None,
    ) -> None:
        self._source = Source(source)
        self.prefix = key_prefix(prefix)
        self._rng = rng or random.Random()
        self._turns: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<Discovery {self.prefix!r}>"

    def registration(
        self,
        service: str,
        instance_id: str,
        address: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
        replace: bool = False,
        on_lost: Callable[[errors.PnyxError], object] | None = None,
    ) -> Registration:
        """A ``Registration`` under this discovery's prefix (not registered yet: use it
        with ``with`` / ``async with`` or call ``register``)."""
        owner = session or self._source.require_session("registering an instance")
        return Registration(
            owner,
            service,
            instance_id,
            address,
            metadata,
            prefix=self.prefix,
            replace=replace,
            on_lost=on_lost,
        )

    # ------------------------------------------------------------------ blocking face

    def register(
        self,
        service: str,
        instance_id: str,
        address: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
        replace: bool = False,
    ) -> Registration:
        """Register an instance now; returns the ``Registration`` (deregister it, or
        close the session, to remove it)."""
        return self.registration(
            service, instance_id, address, metadata, session=session, replace=replace
        ).register()

    def list(self, service: str) -> builtins.list[Instance]:
        """The instances of ``service`` now, ordered by id."""
        return self._source.runtime.call(self._list(service))

    def services(self) -> builtins.list[str]:
        """The names of the services with at least one instance."""
        return self._source.runtime.call(self._services())

    def pick(self, service: str, strategy: Strategy = "round_robin") -> Instance | None:
        """One instance of ``service`` (None if there is none): ``round_robin`` takes
        each in turn (per service, per ``Discovery`` object); ``random`` any."""
        return self._choose(service, self.list(service), strategy)

    def watch(
        self,
        service: str,
        *,
        on_event: Callable[[InstanceEvent], object] | None = None,
    ) -> ServiceWatch:
        """A live view of ``service``'s instances (started; close it when done)."""
        watch = ServiceWatch(self, service, on_event=on_event)
        self._source.runtime.call(watch._open())
        return watch

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Discovery:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ asyncio face

    async def register_async(
        self,
        service: str,
        instance_id: str,
        address: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
        replace: bool = False,
    ) -> Registration:
        return await self.registration(
            service, instance_id, address, metadata, session=session, replace=replace
        ).register_async()

    async def list_async(self, service: str) -> builtins.list[Instance]:
        return await self._source.runtime.call_async(self._list(service))

    async def services_async(self) -> builtins.list[str]:
        return await self._source.runtime.call_async(self._services())

    async def pick_async(self, service: str, strategy: Strategy = "round_robin") -> Instance | None:
        return self._choose(service, await self.list_async(service), strategy)

    async def watch_async(
        self,
        service: str,
        *,
        on_event: Callable[[InstanceEvent], object] | None = None,
    ) -> ServiceWatch:
        watch = ServiceWatch(self, service, on_event=on_event)
        await self._source.runtime.call_async(watch._open())
        return watch

    async def close_async(self) -> None:
        await self._source.close_async()

    async def __aenter__(self) -> Discovery:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    # ------------------------------------------------------------------ logic

    def service_prefix(self, service: str) -> bytes:
        return self.prefix + _check_part(service, "service name").encode() + b"/"

    def decode(self, service: str, kv: KeyValue) -> Instance:
        instance_id = kv.key[len(self.service_prefix(service)) :].decode("utf-8", errors="replace")
        return Instance.from_kv(service, instance_id, kv)

    async def _list(self, service: str) -> builtins.list[Instance]:
        start = self.service_prefix(service)
        result = await self._source.client.get(start, range_end=prefix_end(start))
        return sorted((self.decode(service, kv) for kv in result.kvs), key=lambda i: i.id)

    async def _services(self) -> builtins.list[str]:
        result = await self._source.client.get(
            self.prefix, range_end=prefix_end(self.prefix), keys_only=True
        )
        names = {
            kv.key[len(self.prefix) :].split(b"/", 1)[0].decode("utf-8", errors="replace")
            for kv in result.kvs
        }
        return sorted(names)

    def _choose(
        self, service: str, instances: builtins.list[Instance], strategy: Strategy
    ) -> Instance | None:
        if not instances:
            return None
        if strategy == "random":
            return self._rng.choice(instances)
        if strategy == "round_robin":
            turn = self._turns[service]
            self._turns[service] += 1
            return instances[turn % len(instances)]
        raise errors.InvalidRequestError(f"unknown strategy {strategy!r}")


# --------------------------------------------------------------------------- ServiceWatch


class ServiceWatch(PrefixFollower):
    """A live set of one service's instances; see the module docstring. Made by
    ``Discovery.watch`` / ``watch_async``."""

    def __init__(
        self,
        discovery: Discovery,
        service: str,
        *,
        on_event: Callable[[InstanceEvent], object] | None = None,
    ) -> None:
        self.discovery = discovery
        self.service = service
        self._source = discovery._source
        self._start = discovery.service_prefix(service)
        self._instances: Mapping[str, Instance] = MappingProxyType({})
        self.revision = 0
        """The revision ``instances`` is at."""
        self._listeners: list[Callable[[InstanceEvent], object]] = (
            [on_event] if on_event is not None else []
        )
        self._queue: asyncio.Queue[InstanceEvent | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: AsyncWatch | None = None
        self._closing = False
        self.dropped = 0
        """Events dropped because nobody consumed them (see ``MAX_PENDING_EVENTS``)."""
        self.relists = 0
        self.last_error: errors.PnyxError | None = None

    def __repr__(self) -> str:
        return f"<ServiceWatch {self.service!r} {len(self._instances)} instances>"

    @property
    def instances(self) -> Mapping[str, Instance]:
        """id -> instance, all at ``revision`` (an immutable mapping)."""
        return self._instances

    def add_listener(self, listener: Callable[[InstanceEvent], object]) -> None:
        """Call ``listener(event)`` for every event (on the recipes' loop thread)."""
        self._listeners.append(listener)

    def pick(self, strategy: Strategy = "round_robin") -> Instance | None:
        """An instance from the live set, without a round trip."""
        ordered = sorted(self._instances.values(), key=lambda i: i.id)
        return self.discovery._choose(self.service, ordered, strategy)

    # ------------------------------------------------------------------ consuming

    def get(self, timeout: float | None = None) -> InstanceEvent | None:
        """The next event, or None if none within ``timeout``; ``StopIteration`` once
        closed."""
        event = self._source.runtime.call(self._get(timeout))
        return event

    def __iter__(self) -> Iterator[InstanceEvent]:
        return self

    def __next__(self) -> InstanceEvent:
        event = self._source.runtime.call(self._get(None))
        if event is None:
            raise StopIteration
        return event

    async def get_async(self, timeout: float | None = None) -> InstanceEvent | None:
        return await self._source.runtime.call_async(self._get(timeout))

    def __aiter__(self) -> AsyncIterator[InstanceEvent]:
        return self

    async def __anext__(self) -> InstanceEvent:
        event = await self._source.runtime.call_async(self._get(None))
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Stop following."""
        if self._source.running():
            self._source.runtime.call(self._close())

    async def close_async(self) -> None:
        if self._source.running():
            await self._source.runtime.call_async(self._close())

    def __enter__(self) -> ServiceWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> ServiceWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    # ------------------------------------------------------------------ logic

    async def _open(self) -> None:
        self._queue = asyncio.Queue()
        await self._relist(initial=True)
        self._task = self._start_following(
            self._source,
            self._start,
            _log,
            "service watch failed; retrying",
            f"pnyx-discovery-{self.service}",
            service=self.service,
        )

    async def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        task, self._task = self._task, None
        await self._stop_following(task)
        if self._queue is not None:
            self._queue.put_nowait(None)  # wakes a consumer; None means "closed"

    async def _get(self, timeout: float | None) -> InstanceEvent | None:
        queue = self._queue
        if queue is None:
            raise errors.RecipeError("the service watch is not open")
        if self._closing and queue.empty():
            return None
        deadline = deadline_after(timeout)
        try:
            async with asyncio.timeout(None if timeout is None else remaining(deadline)):
                event = await queue.get()
        except TimeoutError:
            return None
        if event is None:
            queue.put_nowait(None)  # keep the "closed" marker for the next caller
        return event

    async def _relist(self, initial: bool = False) -> None:
        result = await self._source.client.get(self._start, range_end=prefix_end(self._start))
        fresh = {
            instance.id: instance
            for instance in (self.discovery.decode(self.service, kv) for kv in result.kvs)
        }
        old = self._instances
        self._instances = MappingProxyType(fresh)
        self.revision = result.revision
        if initial:
            return
        self.relists += 1
        for instance_id, instance in old.items():
            if instance_id not in fresh:
                self._emit(InstanceEvent(InstanceChange.LEFT, instance, result.revision))
        for instance_id, instance in fresh.items():
            before = old.get(instance_id)
            if before is None:
                self._emit(InstanceEvent(InstanceChange.JOINED, instance, result.revision))
            elif before.mod_revision != instance.mod_revision:
                self._emit(InstanceEvent(InstanceChange.UPDATED, instance, result.revision))

    def _view_revision(self) -> int:
        return self.revision

    def _apply_batch(self, batch: WatchBatch) -> None:
        current = dict(self._instances)
        events: list[InstanceEvent] = []
        for event in batch.events:
            instance = self.discovery.decode(self.service, event.kv)
            before = current.get(instance.id)
            if event.type == EventType.DELETE:
                if before is not None:
                    del current[instance.id]
                    events.append(InstanceEvent(InstanceChange.LEFT, before, batch.revision))
                continue
            current[instance.id] = instance
            kind = InstanceChange.JOINED if before is None else InstanceChange.UPDATED
            events.append(InstanceEvent(kind, instance, batch.revision))
        # The set moves to the new revision before anyone hears about it.
        self._instances = MappingProxyType(current)
        self.revision = batch.revision
        for instance_event in events:
            self._emit(instance_event)

    def _emit(self, event: InstanceEvent) -> None:
        queue = self._queue
        assert queue is not None
        if queue.qsize() >= MAX_PENDING_EVENTS:
            queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1:
                _log.warning(
                    "service watch events dropped: nobody reads them", service=self.service
                )
        queue.put_nowait(event)
        for listener in list(self._listeners):
            run_callback(functools.partial(listener, event))

    async def _relist_after_compaction(self, error: CompactedError) -> None:
        while not self._closing:
            try:
                await self._relist()
                return
            except errors.PnyxError as exc:
                self.last_error = exc
                await asyncio.sleep(MAX_RESUME_PAUSE)
