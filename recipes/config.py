"""``Config``: a typed, validated, live view of a key prefix (feature flags, settings).

::

    schema = {"dark_mode": bool, "max_items": int, "banner": str}
    with Client() as kv, Config(kv, "flags/", schema=schema, defaults={"max_items": 10}) as flags:
        flags["dark_mode"]                  # typed values
        view = flags.snapshot               # one consistent view: several keys, one revision
        view["max_items"], view.revision
        flags.add_listener(lambda old, new, revision: ...)

    async with AsyncClient() as kv, Config(kv, "flags/", schema=schema) as flags:
        await flags.wait_for_async(revision)

**One revision at a time.** The view is built from ONE range read of the prefix (one
store revision), then kept up to date by a watch starting at that revision + 1. The
watch delivers all events of a revision together, and they are applied together: a
transaction that changes several keys appears in one step, never half. The view is
always the parsed contents of the prefix at exactly one store revision (``revision``),
at which every key parsed and the whole-config ``validator`` agreed.

**Typed and validated.** ``schema`` maps a key's name (the key without the prefix) to a
type or a parser: ``bool`` (true/false, 1/0, yes/no, on/off), ``int``, ``float``,
``str``, ``bytes`` (the raw value), ``dict``/``list`` (JSON), any other class (called
with the text, e.g. an ``Enum``), or any callable taking the text and returning the
value or raising. Keys not in the schema are ignored (``strict=True``: rejected). With no
schema every key is exposed, parsed by ``parser`` (default: the UTF-8 text).
``defaults`` fill in absent keys. ``validator(values)`` checks the whole config (e.g. an
invariant between keys) and rejects it by raising or returning False.

**Invalid input keeps the last good config.** A revision whose result does not parse or
validate is rejected: the view stays at the last good revision, and the rejection is
reported - ``errors`` (the recent ones), the ``on_error`` listeners, and a warning log.
Later revisions are applied as soon as the store's contents are valid again (the view
never mixes a newer revision of one key with an older one of another). Until a first
valid state is read, the view holds only the defaults, at revision 0.

**Listeners** get ``(old, new, revision)`` (two immutable mappings) when the values
change; they run on the recipes' event loop thread and must not block.

**History.** ``history(name)`` lists the versions of one key from the store's MVCC
history (puts and deletions, oldest first, back to the compaction point);
``rollback(to_revision)`` reads the prefix at that past revision, validates it, and
writes it back in ONE transaction (guarded against concurrent changes, retried; values
are written without a lease; at most 128 keys changed, the transaction size limit).
``history`` replays up to the last change of the key this view knows of; a key that has
not existed since the view was opened has no history here.

What happens on:

- **Compaction**: the watch is cancelled with the compact revision; the view re-lists
  the prefix (one read, one revision) and resumes from there - one atomic step, changes
  in between reported as one update. Nothing is skipped silently.
- **Leader failover / reconnects**: the client resumes the watch from the last
  revision it delivered (no gap, no duplicate); if it gives up, the view keeps the last
  good config, records the error (``last_error``) and retries in the background.
- **Session loss / client crash**: a config needs no session (it holds nothing); a new
  process simply builds a fresh view.

Threads: the view object is replaced atomically; ``snapshot`` returns one immutable view
- read it once when several keys must agree.

Must never import ``pnyx.core`` beyond ``pnyx.core.errors``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, TypeAlias

import attrs

from pnyx.clients import (
    AsyncClient,
    AsyncWatch,
    Client,
    CompactedError,
    Event,
    EventType,
    KeyValue,
    WatchBatch,
    cmp,
    op,
)
from pnyx.core import errors
from pnyx.recipes._base import deadline_after, library_logger, remaining, run_callback
from pnyx.recipes._source import (
    MAX_RESUME_PAUSE,
    RETRY_PAUSE,
    PrefixFollower,
    Source,
    key_prefix,
    prefix_end,
)
from pnyx.recipes.session import Session

__all__ = [
    "Config",
    "ConfigProblem",
    "ConfigRejection",
    "ConfigSnapshot",
    "ConfigState",
    "ConfigVersion",
    "parse_bool",
    "parser_for",
]

_log = library_logger("pnyx.recipes.config")

Parser: TypeAlias = Callable[[bytes], Any]
"""Raw value -> typed value; raises (any ``Exception``) for an invalid value."""

Spec: TypeAlias = type | Callable[[str], Any]
"""What a schema entry may be: a type (see ``parser_for``) or a callable on the text."""

Validator: TypeAlias = Callable[[Mapping[str, Any]], object]
Listener: TypeAlias = Callable[[Mapping[str, Any], Mapping[str, Any], int], object]

MAX_ERRORS_KEPT = 100
"""Rejections remembered in ``errors`` (the oldest are dropped)."""

_TRUE = frozenset({"true", "1", "yes", "on", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "n", "f"})


# --------------------------------------------------------------------------- parsing


def parse_bool(raw: bytes) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off`` (any case)."""
    text = raw.decode("utf-8").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text[:40]!r}")


def _parse_int(raw: bytes) -> int:
    text = raw.decode("utf-8").strip()
    # int() would also take "1_000"; a config value should look like a plain number.
    if not text.lstrip("+-").isdigit():
        raise ValueError(f"not an integer: {text[:40]!r}")
    return int(text)


def _parse_float(raw: bytes) -> float:
    return float(raw.decode("utf-8").strip())


def _parse_str(raw: bytes) -> str:
    return raw.decode("utf-8")


def _parse_bytes(raw: bytes) -> bytes:
    return raw


def _json_of(kind: type) -> Parser:
    def parse(raw: bytes) -> Any:
        value = json.loads(raw.decode("utf-8"))
        if not isinstance(value, kind):
            raise ValueError(f"JSON {type(value).__name__}, expected {kind.__name__}")
        return value

    return parse


def parser_for(spec: Spec) -> Parser:
    """The parser of one schema entry (see the module docstring)."""
    known: dict[object, Parser] = {
        bool: parse_bool,
        int: _parse_int,
        float: _parse_float,
        str: _parse_str,
        bytes: _parse_bytes,
        dict: _json_of(dict),
        list: _json_of(list),
    }
    if spec in known:
        return known[spec]
    if isinstance(spec, type) and issubclass(spec, enum.Enum):
        enum_type: type[enum.Enum] = spec

        def parse_enum(raw: bytes) -> Any:
            text = raw.decode("utf-8").strip()
            try:
                return enum_type(text)
            except ValueError:
                return enum_type[text]  # by name; KeyError if neither

        return parse_enum
    if callable(spec):
        call: Callable[[str], Any] = spec

        def parse_text(raw: bytes) -> Any:
            return call(raw.decode("utf-8"))

        return parse_text
    raise errors.InvalidRequestError(f"a schema entry must be a type or a callable, got {spec!r}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- values


@attrs.frozen
class ConfigSnapshot(Mapping[str, Any]):
    """The typed values of a config at one store revision (0: defaults only, nothing
    valid read yet). Immutable; a mapping of name -> value."""

    data: Mapping[str, Any]
    revision: int

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"ConfigSnapshot(revision={self.revision}, {dict(self.data)!r})"


@attrs.frozen
class ConfigProblem:
    """Why a key (or, with ``name`` None, the whole config) was rejected."""

    name: str | None
    value: bytes | None
    message: str


@attrs.frozen
class ConfigRejection:
    """A store revision whose result was not applied, and why."""

    revision: int
    problems: tuple[ConfigProblem, ...]

    def __str__(self) -> str:
        reasons = "; ".join(
            f"{p.name}: {p.message}" if p.name is not None else p.message for p in self.problems
        )
        return f"revision {self.revision} rejected: {reasons}"


@attrs.frozen
class ConfigVersion:
    """One version of one key in the store's history."""

    revision: int
    value: bytes | None
    """The raw value; None for a deletion."""
    parsed: Any = None
    """The typed value (None for a deletion or an invalid value)."""
    error: str | None = None
    """Why the value does not parse (None if it does, or for a deletion)."""

    @property
    def deleted(self) -> bool:
        return self.value is None


# --------------------------------------------------------------------------- state


class ConfigState:
    """The I/O-free heart of ``Config``: the raw contents of the prefix at one revision,
    and the last good typed view. Fed whole snapshots (``load``) and whole revisions
    (``apply``); decides, per revision, to accept or reject. Never does I/O."""

    def __init__(
        self,
        prefix: bytes,
        *,
        schema: Mapping[str, Spec] | None = None,
        parser: Spec = str,
        defaults: Mapping[str, Any] | None = None,
        validator: Validator | None = None,
        strict: bool = False,
    ) -> None:
        self.prefix = prefix
        self._parsers = (
            {name: parser_for(spec) for name, spec in schema.items()}
            if schema is not None
            else None
        )
        self._default_parser = parser_for(parser)
        self._defaults = dict(defaults or {})
        self._validator = validator
        self._strict = strict
        self.raw: dict[str, KeyValue] = {}
        """The prefix's keys (by name) at ``seen_revision``."""
        self._parsed: dict[str, tuple[int, Any, str | None]] = {}
        """name -> (mod revision, value, error) of the last parse, so an unchanged key is
        not parsed again."""
        self.seen_revision = 0
        """The last store revision looked at (applied or rejected)."""
        self.current = ConfigSnapshot(MappingProxyType(dict(self._defaults)), 0)
        """The last good view."""
        self.rejected: ConfigRejection | None = None
        """Why ``seen_revision`` was rejected (None: the view is the store's contents)."""
        self.last_event: dict[str, int] = {}
        """name -> the revision of its last event seen by ``apply`` (puts and deletes)."""

    def name_of(self, key: bytes) -> str | None:
        if not key.startswith(self.prefix):
            return None
        return key[len(self.prefix) :].decode("utf-8", errors="surrogateescape")

    def parser(self, name: str) -> Parser | None:
        if self._parsers is None:
            return self._default_parser
        return self._parsers.get(name)

    def parse(self, name: str, value: bytes) -> tuple[Any, str | None]:
        """(typed value, None) or (None, why not)."""
        parser = self.parser(name)
        if parser is None:
            return None, "not in the schema" if self._strict else None
        try:
            return parser(value), None
        except Exception as exc:
            return None, _describe(exc)

    # ------------------------------------------------------------------ feeding

    def load(self, kvs: tuple[KeyValue, ...], revision: int) -> tuple[bool, ConfigRejection | None]:
        """Replace everything with a fresh snapshot read at ``revision``. Returns
        (whether the view changed, the rejection if the snapshot is invalid)."""
        self.raw = {}
        for kv in kvs:
            name = self.name_of(kv.key)
            if name is not None:
                self.raw[name] = kv
        return self._settle(revision)

    def apply(self, batch: WatchBatch) -> tuple[bool, ConfigRejection | None]:
        """Apply every event of one revision together."""
        if batch.revision <= self.seen_revision:
            return False, None  # already part of what we have (a resumed watch)
        for event in batch.events:
            self._apply_event(event, batch.revision)
        return self._settle(batch.revision)

    def _apply_event(self, event: Event, revision: int) -> None:
        name = self.name_of(event.kv.key)
        if name is None:
            return
        self.last_event[name] = revision
        if event.type == EventType.DELETE:
            self.raw.pop(name, None)
        else:
            self.raw[name] = event.kv

    def _settle(self, revision: int) -> tuple[bool, ConfigRejection | None]:
        self.seen_revision = revision
        values, problems = self.build(self.raw)
        if problems:
            self.rejected = ConfigRejection(revision, tuple(problems))
            return False, self.rejected
        self.rejected = None
        changed = values != dict(self.current.data)
        self.current = ConfigSnapshot(MappingProxyType(values), revision)
        return changed, None

    def build(self, raw: Mapping[str, KeyValue]) -> tuple[dict[str, Any], list[ConfigProblem]]:
        """Typed values of ``raw`` (defaults for absent keys) and what is wrong."""
        values = dict(self._defaults)
        problems: list[ConfigProblem] = []
        for name, kv in sorted(raw.items()):
            cached = self._parsed.get(name)
            if cached is not None and cached[0] == kv.mod_revision and raw is self.raw:
                value, error = cached[1], cached[2]
            else:
                value, error = self.parse(name, kv.value)
                if raw is self.raw:
                    self._parsed[name] = (kv.mod_revision, value, error)
            if error is not None:
                problems.append(ConfigProblem(name, kv.value, error))
            elif self.parser(name) is not None:
                values[name] = value
        if raw is self.raw:
            for stale in set(self._parsed) - set(raw):
                del self._parsed[stale]
        if not problems and self._validator is not None:
            try:
                verdict = self._validator(MappingProxyType(values))
            except Exception as exc:
                problems.append(ConfigProblem(None, None, f"validator: {_describe(exc)}"))
            else:
                if verdict is False:
                    problems.append(ConfigProblem(None, None, "validator returned False"))
        return values, problems


# --------------------------------------------------------------------------- the recipe


class Config(PrefixFollower):
    """A typed, validated, live view of the keys under ``prefix``; see the module
    docstring.

    ``source``: a ``Client``, ``AsyncClient`` or ``Session``. ``schema`` / ``parser`` /
    ``defaults`` / ``validator`` / ``strict``: how values are typed and checked.
    ``on_change(old, new, revision)`` and ``on_error(rejection)``: first listeners (more
    with ``add_listener`` / ``add_error_listener``). ``timeout``: default bound of
    ``open`` and of the history and rollback calls (None: the client's).
    """

    def __init__(
        self,
        source: Client | AsyncClient | Session,
        prefix: str | bytes,
        *,
        schema: Mapping[str, Spec] | None = None,
        parser: Spec = str,
        defaults: Mapping[str, Any] | None = None,
        validator: Validator | None = None,
        strict: bool = False,
        on_change: Listener | None = None,
        on_error: Callable[[ConfigRejection], object] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.prefix = key_prefix(prefix)
        self._state = ConfigState(
            self.prefix,
            schema=schema,
            parser=parser,
            defaults=defaults,
            validator=validator,
            strict=strict,
        )
        self.timeout = timeout
        self._source = Source(source)
        self._listeners: list[Listener] = [on_change] if on_change is not None else []
        self._error_listeners: list[Callable[[ConfigRejection], object]] = (
            [on_error] if on_error is not None else []
        )
        self._errors: collections.deque[ConfigRejection] = collections.deque(maxlen=MAX_ERRORS_KEPT)
        self._follower: asyncio.Task[None] | None = None
        self._watch: AsyncWatch | None = None
        self._closing = False
        self._progress: asyncio.Event | None = None
        self._opened = False
        self.last_error: errors.PnyxError | None = None
        """The last error of the background watch (None once it works again)."""
        self.relists = 0
        """How many times the view was rebuilt from a fresh read (after compaction)."""

    def __repr__(self) -> str:
        return f"<Config {self.prefix!r} revision={self.revision}>"

    # ------------------------------------------------------------------ reading (any thread)

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The current view: immutable, every key at one revision."""
        return self._state.current

    @property
    def values(self) -> Mapping[str, Any]:
        """The current values (the same as ``snapshot``)."""
        return self._state.current

    @property
    def revision(self) -> int:
        """The store revision the view equals (0: defaults only)."""
        return self._state.current.revision

    @property
    def seen_revision(self) -> int:
        """The last store revision looked at (applied or rejected)."""
        return self._state.seen_revision

    @property
    def healthy(self) -> bool:
        """True when the view is the store's current contents (the last revision seen
        was valid)."""
        return self._state.rejected is None

    @property
    def rejected(self) -> ConfigRejection | None:
        """Why the store's current contents are not applied (None when healthy)."""
        return self._state.rejected

    @property
    def errors(self) -> tuple[ConfigRejection, ...]:
        """The recent rejections, oldest first."""
        return tuple(self._errors)

    def __getitem__(self, name: str) -> Any:
        return self._state.current[name]

    def __contains__(self, name: object) -> bool:
        return name in self._state.current

    def get(self, name: str, default: Any = None) -> Any:
        return self._state.current.get(name, default)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new, revision)`` after each change of the values."""
        self._listeners.append(listener)

    def add_error_listener(self, listener: Callable[[ConfigRejection], object]) -> None:
        """Call ``listener(rejection)`` each time a revision is rejected."""
        self._error_listeners.append(listener)

    # ------------------------------------------------------------------ blocking face

    def open(self) -> Config:
        """Read the prefix (one revision) and start following it (``with`` does this)."""
        self._source.runtime.call(self._open())
        return self

    def close(self) -> None:
        """Stop following (the view keeps its last values)."""
        try:
            if self._source.running():
                self._source.runtime.call(self._close())
        finally:
            self._source.close()

    def wait_for(self, revision: int, timeout: float | None = None) -> ConfigSnapshot:
        """Block until the view has looked at ``revision`` (a write to this prefix);
        the view then (applied, or the last good one if rejected).
        ``errors.TimeoutError`` after ``timeout``."""
        return self._source.runtime.call(self._wait_for(revision, timeout))

    def history(
        self, name: str, *, since: int = 0, timeout: float | None = None
    ) -> list[ConfigVersion]:
        """The versions of key ``name`` from the store's history (see the module
        docstring), oldest first; from revision ``since`` (0: as far back as kept)."""
        return self._source.runtime.call(self._history(name, since, timeout))

    def rollback(self, to_revision: int, *, timeout: float | None = None) -> int:
        """Write the prefix's contents at ``to_revision`` back in one transaction;
        returns the new revision. ``InvalidRequestError`` if that old config does not
        validate; ``CompactedError`` if it is no longer kept."""
        return self._source.runtime.call(self._rollback(to_revision, timeout))

    def __enter__(self) -> Config:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ asyncio face

    async def open_async(self) -> Config:
        await self._source.runtime.call_async(self._open())
        return self

    async def close_async(self) -> None:
        try:
            if self._source.running():
                await self._source.runtime.call_async(self._close())
        finally:
            await self._source.close_async()

    async def wait_for_async(self, revision: int, timeout: float | None = None) -> ConfigSnapshot:
        return await self._source.runtime.call_async(self._wait_for(revision, timeout))

    async def history_async(
        self, name: str, *, since: int = 0, timeout: float | None = None
    ) -> list[ConfigVersion]:
        return await self._source.runtime.call_async(self._history(name, since, timeout))

    async def rollback_async(self, to_revision: int, *, timeout: float | None = None) -> int:
        return await self._source.runtime.call_async(self._rollback(to_revision, timeout))

    async def __aenter__(self) -> Config:
        return await self.open_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close_async()

    # ------------------------------------------------------------------ logic

    def _timeout(self, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        if self.timeout is not None:
            return self.timeout
        return self._source.client.timeout

    async def _open(self) -> None:
        if self._opened:
            raise errors.RecipeError("a config view is opened once; make a new one")
        self._progress = asyncio.Event()
        await self._relist(initial=True)
        self._opened = True
        self._follower = self._start_following(
            self._source,
            self.prefix,
            _log,
            "config watch failed; retrying",
            f"pnyx-config-{self.prefix.decode(errors='replace')}",
            prefix=self.prefix,
        )

    async def _close(self) -> None:
        self._closing = True
        task, self._follower = self._follower, None
        await self._stop_following(task)

    async def _relist(self, initial: bool = False) -> None:
        """One range read of the whole prefix: a fresh snapshot at one revision."""
        result = await self._source.client.get(
            self.prefix, range_end=prefix_end(self.prefix), timeout=self._timeout(None)
        )
        old = self._state.current
        changed, rejection = self._state.load(result.kvs, result.revision)
        if not initial:
            self.relists += 1
        self._report(old, changed and not initial, rejection)

    def _view_revision(self) -> int:
        return self._state.seen_revision

    def _apply_batch(self, batch: WatchBatch) -> None:
        old = self._state.current
        changed, rejection = self._state.apply(batch)
        self._report(old, changed, rejection)

    async def _relist_after_compaction(self, error: CompactedError) -> None:
        _log.info(
            "config watch compacted; re-listing",
            prefix=self.prefix,
            compact_revision=error.compact_revision,
        )
        await self._relist_until_done()

    async def _relist_until_done(self) -> None:
        failures = 0
        while not self._closing:
            try:
                await self._relist()
                self.last_error = None
                return
            except errors.PnyxError as exc:
                self.last_error = exc
                failures += 1
                _log.warning("config re-list failed; retrying", prefix=self.prefix, error=str(exc))
                await asyncio.sleep(min(MAX_RESUME_PAUSE, RETRY_PAUSE * 2**failures))

    def _report(
        self, old: ConfigSnapshot, changed: bool, rejection: ConfigRejection | None
    ) -> None:
        if rejection is not None:
            self._errors.append(rejection)
            _log.warning("config revision rejected", prefix=self.prefix, reason=str(rejection))
            for error_listener in list(self._error_listeners):
                run_callback(functools.partial(error_listener, rejection))
        if changed:
            new = self._state.current
            for listener in list(self._listeners):
                run_callback(functools.partial(listener, old, new, new.revision))
        if self._progress is not None:
            # Wake every wait_for; each checks its own revision.
            self._progress.set()
            self._progress = asyncio.Event()

    async def _wait_for(self, revision: int, timeout: float | None) -> ConfigSnapshot:
        if not self._opened:
            raise errors.RecipeError("open the config first (`with Config(...)`)")
        deadline = deadline_after(timeout)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(None if timeout is None else remaining(deadline)):
                while self._state.seen_revision < revision:
                    progress = self._progress
                    assert progress is not None
                    await progress.wait()
        except TimeoutError:
            raise errors.TimeoutError(
                f"config {self.prefix!r} did not reach revision {revision} "
                f"(at {self._state.seen_revision})"
            ) from None
        return self._state.current

    async def _history(self, name: str, since: int, timeout: float | None) -> list[ConfigVersion]:
        """Replay the key's events from the store's history up to the last one this
        view knows of: the watch delivers every put and deletion in revision order, and
        knowing the revision of the last one tells us when the replay is complete."""
        deadline = deadline_after(self._timeout(timeout))
        key = self.prefix + name.encode("utf-8", errors="surrogateescape")
        kv = self._source.client
        last = self._state.last_event.get(name)
        current = await kv.get(key, timeout=max(0.01, remaining(deadline)))
        if current.kvs:
            last = max(last or 0, current.kvs[0].mod_revision)
        if last is None:
            return []  # not in the store since this view started: nothing to replay to
        start = max(since, 1)
        versions: list[ConfigVersion] = []
        while start <= last:
            try:
                async with kv.watch(key, start_revision=start) as watch:
                    while True:
                        left = remaining(deadline)
                        batch = await watch.get(left) if left > 0 else None
                        if batch is None:
                            raise errors.TimeoutError(f"history of {name!r}: timed out")
                        for event in batch.events:
                            versions.append(self._version(name, event))
                        if batch.revision >= last:
                            return versions
            except CompactedError as exc:
                if versions or exc.compact_revision <= start:
                    raise
                start = exc.compact_revision  # history before it is gone: start there
        return versions

    def _version(self, name: str, event: Event) -> ConfigVersion:
        revision = event.kv.mod_revision
        if event.type == EventType.DELETE:
            return ConfigVersion(revision, None)
        value, error = self._state.parse(name, event.kv.value)
        return ConfigVersion(revision, event.kv.value, value, error)

    async def _rollback(self, to_revision: int, timeout: float | None) -> int:
        kv = self._source.client
        deadline = deadline_after(self._timeout(timeout))
        end = prefix_end(self.prefix)
        while True:
            left = max(0.01, remaining(deadline))
            head = await kv.get(self.prefix, range_end=end, timeout=left)
            old = await kv.get(self.prefix, range_end=end, revision=to_revision, timeout=left)
            target = {item.key: item for item in old.kvs}
            now = {item.key: item for item in head.kvs}
            by_name: dict[str, KeyValue] = {}
            for key, item in target.items():
                name = self._state.name_of(key)
                if name is not None:
                    by_name[name] = item
            _, problems = self._state.build(by_name)
            if problems:
                raise errors.InvalidRequestError(str(ConfigRejection(to_revision, tuple(problems))))
            puts = [
                op.put(key, item.value)
                for key, item in target.items()
                if key not in now or now[key].value != item.value
            ]
            deletes = [op.delete(key) for key in now if key not in target]
            if not puts and not deletes:
                return head.revision
            # Nothing in the prefix changed since `head` (no newer mod revision), and the
            # keys we leave alone still exist (a deletion leaves no mod revision behind).
            compares = [cmp.mod(self.prefix, range_end=end) < head.revision + 1] + [
                cmp.mod(key) == now[key].mod_revision
                for key, item in target.items()
                if key in now and now[key].value == item.value
            ]
            result = await kv.txn(
                compare=compares,
                success=[*puts, *deletes],
                failure=[],
                timeout=max(0.01, remaining(deadline)),
            )
            if result.succeeded:
                _log.info(
                    "config rolled back",
                    prefix=self.prefix,
                    to_revision=to_revision,
                    revision=result.revision,
                )
                return result.revision
            if remaining(deadline) <= 0:
                raise errors.TimeoutError(f"rollback of {self.prefix!r}: the prefix kept changing")
