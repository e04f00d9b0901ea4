"""The ``pnyx`` command line (click). The top layer: nothing imports it.

Client commands (this module): ``put``, ``get``, ``del``, ``txn``, ``watch``, ``lease``
(``grant``/``revoke``/``ttl``/``list``/``keep-alive``), ``member``
(``list``/``add``/``promote``/``remove``), ``status``, ``health`` and ``compact``. Other
modules register theirs at the bottom: ``node``/``up`` (``cli_server``), ``bench``/``check``
(``cli_bench``), ``lock``/``elect`` (``cli_recipes``); pnyx errors raised by any command
become one line and an exit code here (``_Group``).

Global options: ``--endpoints`` (else ``$PNYX_ENDPOINTS``, else ``pnyx up``'s three
local endpoints), ``--timeout`` (seconds per command, retries included) and
``-w/--write-out simple|json``.

Output conventions (documented in ``pnyx --help`` too):

- keys and values are printed as UTF-8 text when they are valid UTF-8, otherwise as
  base64; in JSON a field ``F`` printed as base64 is accompanied by ``"F_base64": true``;
- JSON field names follow etcd's (``header``, ``kvs``, ``key``, ``value``,
  ``create_revision``, ``mod_revision``, ``version``, ``lease``, ``count``, ...), ints as
  numbers; ``watch -w json`` prints one JSON object per line (one per revision);
- lease and member ids are hexadecimal in simple output and on the command line (as
  etcdctl does), plain numbers in JSON.

Exit codes: 0 success; 1 the cluster refused the request or something is unhealthy;
2 bad usage; 3 the cluster could not be reached or did not answer in time; 130
interrupted. Errors are one line on stderr (``Error: <class>: <message>``), never a
traceback.

This module holds command-line glue only; the work is done by ``pnyx.clients.Client``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click
import structlog

from pnyx.clients.client import Client
from pnyx.clients.results import (
    DeleteResult,
    GetResult,
    OpResult,
    PutResult,
    StatusResult,
    TxnResult,
    WatchBatch,
)
from pnyx.clients.txn import CompareBuilder, cmp, op
from pnyx.core import errors
from pnyx.core.wire import (
    Compare,
    Event,
    EventType,
    KeyValue,
    Member,
    RangeRequest,
    RequestOp,
    ResponseHeader,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

# --------------------------------------------------------------------------- plumbing


class _Settings:
    """What the global options decided; one client per invocation, made on first use."""

    def __init__(self, endpoints: str | None, timeout: float, write_out: str) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self.json = write_out == "json"
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            _quiet_logs()
            self._client = Client(self.endpoints, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _quiet_logs() -> None:
    """Library debug logs (connections coming and going) are not for a terminal."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class _Group(click.Group):
    """Turns every pnyx error into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.PnyxError as exc:
            click.echo(f"Error: {type(exc).__name__}: {exc.message}", err=True)
            code = EXIT_UNAVAILABLE if isinstance(exc, errors.UnavailableError) else EXIT_REFUSED
            ctx.exit(code)
        except KeyboardInterrupt:
            ctx.exit(EXIT_INTERRUPTED)


def _settings() -> _Settings:
    settings = click.get_current_context().find_object(_Settings)
    assert settings is not None, "the main group sets the settings up"
    return settings


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, separators=(",", ":")))


def _hex_id(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a hexadecimal id") from None
    if value < 0:
        raise click.BadParameter("ids are positive")
    return value


class _HexId(click.ParamType):  # type: ignore[type-arg]  # generic in stubs only
    name = "HEX_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return _hex_id(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


HEX_ID = _HexId()


# --------------------------------------------------------------------------- rendering


def _text(data: bytes) -> tuple[str, bool]:
    """``data`` as printable text: UTF-8 if valid, else base64 (second item True)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def _bytes_fields(target: dict[str, Any], **fields: bytes) -> None:
    for name, data in fields.items():
        target[name], encoded = _text(data)
        if encoded:
            target[f"{name}_base64"] = True


def _header_json(header: ResponseHeader) -> dict[str, Any]:
    return {
        "cluster_id": header.cluster_id,
        "member_id": header.member_id,
        "revision": header.revision,
        "raft_term": header.raft_term,
    }


def _kv_json(kv: KeyValue) -> dict[str, Any]:
    result: dict[str, Any] = {}
    _bytes_fields(result, key=kv.key)
    result.update(
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
    )
    _bytes_fields(result, value=kv.value)
    result["lease"] = kv.lease
    return result


def _get_json(result: GetResult) -> dict[str, Any]:
    return {
        "header": _header_json(result.header),
        "kvs": [_kv_json(kv) for kv in result.kvs],
        "more": result.more,
        "count": result.count,
    }


def _put_json(result: PutResult) -> dict[str, Any]:
    value: dict[str, Any] = {"header": _header_json(result.header)}
    if result.prev_kv is not None:
        value["prev_kv"] = _kv_json(result.prev_kv)
    return value


def _delete_json(result: DeleteResult) -> dict[str, Any]:
    value: dict[str, Any] = {"header": _header_json(result.header), "deleted": result.deleted}
    if result.prev_kvs:
        value["prev_kvs"] = [_kv_json(kv) for kv in result.prev_kvs]
    return value


def _op_json(result: OpResult) -> dict[str, Any]:
    if isinstance(result, GetResult):
        return {"response_range": _get_json(result)}
    if isinstance(result, PutResult):
        return {"response_put": _put_json(result)}
    if isinstance(result, DeleteResult):
        return {"response_delete_range": _delete_json(result)}
    return {"response_txn": _txn_json(result)}


def _txn_json(result: TxnResult) -> dict[str, Any]:
    return {
        "header": _header_json(result.header),
        "succeeded": result.succeeded,
        "responses": [_op_json(item) for item in result.responses],
    }


def _event_json(event: Event) -> dict[str, Any]:
    value: dict[str, Any] = {"type": event.type.name, "kv": _kv_json(event.kv)}
    if event.prev_kv is not None:
        value["prev_kv"] = _kv_json(event.prev_kv)
    return value


def _member_json(member: Member) -> dict[str, Any]:
    return {
        "id": member.id,
        "name": member.name,
        "peer_urls": list(member.peer_urls),
        "client_urls": list(member.client_urls),
        "is_learner": member.is_learner,
    }


def _status_json(result: StatusResult) -> dict[str, Any]:
    return {
        "endpoint": result.endpoint,
        "status": {
            "header": _header_json(result.header),
            "version": result.version,
            "db_size": result.db_size,
            "leader": result.leader,
            "raft_index": result.raft_index,
            "raft_term": result.raft_term,
            "raft_applied_index": result.raft_applied_index,
            "errors": list(result.errors),
            "is_learner": result.is_learner,
        },
    }


def _print_kvs(kvs: Sequence[KeyValue], keys_only: bool = False) -> None:
    for kv in kvs:
        click.echo(_text(kv.key)[0])
        if not keys_only:
            click.echo(_text(kv.value)[0])


def _print_op(result: OpResult) -> None:
    if isinstance(result, GetResult):
        _print_kvs(result.kvs)
    elif isinstance(result, PutResult):
        click.echo("OK")
    elif isinstance(result, DeleteResult):
        click.echo(result.deleted)
    else:
        _print_txn(result)


def _print_txn(result: TxnResult) -> None:
    click.echo("SUCCESS" if result.succeeded else "FAILURE")
    for item in result.responses:
        click.echo()
        _print_op(item)


def _print_member(member: Member) -> None:
    click.echo(
        ", ".join(
            [
                f"{member.id:x}",
                "started" if member.client_urls else "unstarted",
                member.name,
                ",".join(member.peer_urls),
                ",".join(member.client_urls),
                str(member.is_learner).lower(),
            ]
        )
    )


# --------------------------------------------------------------------------- the group


@click.group(
    cls=_Group,
    epilog=(
        "Keys and values print as UTF-8 text when valid UTF-8, else as base64 (in JSON a "
        'base64 field F comes with "F_base64": true). Lease and member ids are hex on the '
        "command line and in simple output. Exit codes: 0 ok, 1 refused or unhealthy, "
        "2 usage, 3 cluster unavailable or timed out, 130 interrupted."
    ),
)
@click.option(
    "--endpoints",
    envvar="PNYX_ENDPOINTS",
    default=None,
    metavar="URL[,URL...]",
    help=(
        "Client endpoints, comma-separated (env PNYX_ENDPOINTS; default: pnyx up's "
        "tcp://127.0.0.1:7101,7102,7103)."
    ),
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds per request, retries and failover included.",
)
@click.option(
    "-w",
    "--write-out",
    type=click.Choice(["simple", "json"]),
    default="simple",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def main(ctx: click.Context, endpoints: str | None, timeout: float, write_out: str) -> None:
    """pnyx: a strongly consistent key-value store with coordination recipes."""
    settings = _Settings(endpoints, timeout, write_out)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


# --------------------------------------------------------------------------- key-value


@main.command()
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", type=HEX_ID, default=0, help="Attach the key to this lease (hex id).")
@click.option("--prev-kv", is_flag=True, help="Print the key-value pair before the put.")
def put(key: str, value: str | None, lease: int, prev_kv: bool) -> None:
    """Set KEY to VALUE (read from stdin if VALUE is omitted)."""
    settings = _settings()
    data = sys.stdin.buffer.read() if value is None else value.encode("utf-8")
    result = settings.client().put(key, data, lease=lease, prev_kv=prev_kv)
    if settings.json:
        _emit_json(_put_json(result))
        return
    click.echo("OK")
    if result.prev_kv is not None:
        _print_kvs([result.prev_kv])


@main.command()
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--rev", type=click.IntRange(min=0), default=0, help="Read at this revision.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many keys.")
@click.option("--keys-only", is_flag=True, help="Keys without values.")
@click.option("--count-only", is_flag=True, help="Only count the keys.")
@click.option("--serializable", is_flag=True, help="Answer from the local member (may be stale).")
def get(
    *,
    key: str,
    range_end: str | None,
    prefix: bool,
    rev: int,
    limit: int,
    keys_only: bool,
    count_only: bool,
    serializable: bool,
) -> None:
    """Read KEY, a prefix (--prefix) or the range [KEY, RANGE_END)."""
    settings = _settings()
    result = settings.client().get(
        key,
        prefix=prefix,
        range_end=range_end,
        revision=rev,
        limit=limit,
        keys_only=keys_only,
        count_only=count_only,
        serializable=serializable,
    )
    if settings.json:
        _emit_json(_get_json(result))
    elif count_only:
        click.echo(result.count)
    else:
        _print_kvs(result.kvs, keys_only)


@main.command("del")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--prev-kv", is_flag=True, help="Print the deleted key-value pairs.")
def delete(key: str, range_end: str | None, prefix: bool, prev_kv: bool) -> None:
    """Delete KEY, a prefix (--prefix) or the range [KEY, RANGE_END); prints the count."""
    settings = _settings()
    result = settings.client().delete(key, prefix=prefix, range_end=range_end, prev_kv=prev_kv)
    if settings.json:
        _emit_json(_delete_json(result))
        return
    click.echo(result.deleted)
    _print_kvs(result.prev_kvs)


@main.command()
@click.argument("revision", type=click.IntRange(min=1))
@click.option("--physical", is_flag=True, help="Return only once the space is freed.")
def compact(revision: int, physical: bool) -> None:
    """Drop the history before REVISION."""
    settings = _settings()
    result = settings.client().compact(revision, physical)
    if settings.json:
        _emit_json({"header": _header_json(result.header), "revision": revision})
    else:
        click.echo(f"compacted revision {revision}")


# --------------------------------------------------------------------------- txn

_COMPARE = re.compile(
    r"""^\s*(?P<target>\w+)\(\s*(?P<key>"(?:[^"\\]|\\.)*"|[^)\s]+)\s*\)\s*
        (?P<op>==|=|!=|<|>)\s*(?P<value>.+?)\s*$""",
    re.VERBOSE,
)
_TARGETS = {
    "value": "value",
    "val": "value",
    "version": "version",
    "ver": "version",
    "create": "create",
    "c": "create",
    "mod": "mod",
    "m": "mod",
    "lease": "lease",
}
"""etcdctl's compare target names (and abbreviations) -> the ``cmp`` builder."""


def _unquote(text: str) -> str:
    parts = shlex.split(text)
    if len(parts) != 1:
        raise click.UsageError(f"expected one (quoted) word, got {text!r}")
    return parts[0]


def parse_compare(line: str) -> Compare:
    """``mod("k") > "3"``, ``value("k") = "v"`` (etcdctl's syntax) -> a ``Compare``."""
    match = _COMPARE.match(line)
    if match is None:
        raise click.UsageError(f'bad compare {line!r}; expected e.g. version("key") = "0"')
    target = _TARGETS.get(match["target"].lower())
    if target is None:
        raise click.UsageError(f"unknown compare target {match['target']!r}")
    builder: CompareBuilder = getattr(cmp, target)(_unquote(match["key"]))
    raw = _unquote(match["value"])
    value: str | int = raw
    if target != "value":
        try:
            value = _hex_id(raw) if target == "lease" else int(raw)
        except (ValueError, click.BadParameter):
            raise click.UsageError(f"compare {line!r} needs a number") from None
    operator = match["op"]
    if operator in ("=", "=="):
        return builder == value
    if operator == "!=":
        return builder != value
    if operator == "<":
        return builder < value
    return builder > value


def parse_op(line: str) -> RequestOp:
    """``put k v [--lease=ID]``, ``get k [end] [--prefix] [--rev=N] [--limit=N]
    [--keys-only]``, ``del k [end] [--prefix]`` -> a transaction op."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise click.UsageError(f"cannot parse {line!r}: {exc}") from None
    if not words:
        raise click.UsageError("empty operation")
    verb, args = words[0].lower(), words[1:]
    flags: dict[str, str] = {}
    positional: list[str] = []
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            flags[name] = value
        else:
            positional.append(arg)
    allowed = {
        "put": {"--lease"},
        "get": {"--prefix", "--rev", "--limit", "--keys-only"},
        "del": {"--prefix"},
    }
    if verb not in allowed:
        raise click.UsageError(f"unknown operation {verb!r}; expected get, put or del")
    unknown = set(flags) - allowed[verb]
    if unknown:
        raise click.UsageError(f"{verb}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        if verb == "put":
            if len(positional) != 2:
                raise click.UsageError("put needs KEY and VALUE")
            lease = _hex_id(flags["--lease"]) if "--lease" in flags else 0
            return op.put(positional[0], positional[1], lease=lease)
        if not 1 <= len(positional) <= 2:
            raise click.UsageError(f"{verb} needs KEY and an optional RANGE_END")
        range_end = positional[1] if len(positional) == 2 else None
        if verb == "get":
            return op.get(
                positional[0],
                prefix="--prefix" in flags,
                range_end=range_end,
                revision=int(flags.get("--rev") or 0),
                limit=int(flags.get("--limit") or 0),
                keys_only="--keys-only" in flags,
            )
        return op.delete(positional[0], prefix="--prefix" in flags, range_end=range_end)
    except (ValueError, click.BadParameter) as exc:
        raise click.UsageError(f"bad operation {line!r}: {exc}") from None


def parse_txn(text: str) -> tuple[list[Compare], list[RequestOp], list[RequestOp]]:
    """Three sections separated by blank lines: compares, success ops, failure ops."""
    sections: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if len(sections) < 3:
                sections.append([])
            continue
        if line.startswith("#"):
            continue
        sections[-1].append(line)
    while len(sections) < 3:
        sections.append([])
    compares = [parse_compare(line) for line in sections[0]]
    return (
        compares,
        [parse_op(line) for line in sections[1]],
        [parse_op(line) for line in sections[2]],
    )


@main.command()
@click.option("-i", "--interactive", is_flag=True, help="Prompt for each section.")
def txn(interactive: bool) -> None:
    """Run a transaction read from stdin, etcdctl style: compares, a blank line, the
    success ops, a blank line, the failure ops. For example:

    \b
        mod("key1") > "0"
        value("key2") = "v"

    \b
        put key1 "new value"

    \b
        get key1
    """
    settings = _settings()
    if interactive:
        text = "\n".join(_read_section(title) for title in _TXN_SECTIONS)
    else:
        text = sys.stdin.read()
    compares, success, failure = parse_txn(text)
    result = settings.client().txn(compares, success, failure)
    if settings.json:
        _emit_json(_txn_json(result))
    else:
        _print_txn(result)


_TXN_SECTIONS = (
    "compares:",
    "success requests (get, put, del):",
    "failure requests (get, put, del):",
)


def _read_section(title: str) -> str:
    click.echo(title, err=True)
    lines = []
    for raw in sys.stdin:
        if not raw.strip():
            break
        lines.append(raw.rstrip("\n"))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- watch


@main.command()
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--rev", type=click.IntRange(min=0), default=0, help="Start at this revision.")
@click.option("--prev-kv", is_flag=True, help="Include the previous key-value pair.")
@click.option("--progress-notify", is_flag=True, help="Also print progress notifications.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many revisions (default: run until interrupted).",
)
def watch(
    *,
    key: str,
    range_end: str | None,
    prefix: bool,
    rev: int,
    prev_kv: bool,
    progress_notify: bool,
    count: int | None,
) -> None:
    """Print changes of KEY, a prefix or a range as they happen: per event the type
    (PUT/DELETE), the key and (for PUT) the value; with -w json one line per revision."""
    settings = _settings()
    delivered = 0
    with settings.client().watch(
        key,
        prefix=prefix,
        range_end=range_end,
        start_revision=rev,
        prev_kv=prev_kv,
        progress_notify=progress_notify,
    ) as stream:
        for batch in _batches(stream):
            _print_batch(batch, settings.json)
            if batch.events:
                delivered += 1
                if count is not None and delivered >= count:
                    return


def _batches(stream: Any) -> Iterator[WatchBatch]:
    yield from stream


def _print_batch(batch: WatchBatch, as_json: bool) -> None:
    if as_json:
        value: dict[str, Any] = {
            "header": {"revision": batch.revision},
            "events": [_event_json(event) for event in batch.events],
        }
        if batch.progress_notify:
            value["progress_notify"] = True
        _emit_json(value)
        return
    if batch.progress_notify:
        click.echo(f"progress notify: revision {batch.revision}")
    for event in batch.events:
        click.echo("PUT" if event.type == EventType.PUT else "DELETE")
        if event.prev_kv is not None:
            _print_kvs([event.prev_kv])
        click.echo(_text(event.kv.key)[0])
        if event.type == EventType.PUT:
            click.echo(_text(event.kv.value)[0])


# --------------------------------------------------------------------------- leases


@main.group()
def lease() -> None:
    """Grant, revoke, inspect and keep alive leases."""


@lease.command("grant")
@click.argument("ttl", type=click.IntRange(min=1))
def lease_grant(ttl: int) -> None:
    """Grant a lease of TTL seconds."""
    settings = _settings()
    result = settings.client().lease_grant(ttl)
    if settings.json:
        _emit_json({"header": _header_json(result.header), "id": result.id, "ttl": result.ttl})
    else:
        click.echo(f"lease {result.id:x} granted with TTL({result.ttl}s)")


@lease.command("revoke")
@click.argument("lease_id", type=HEX_ID)
def lease_revoke(lease_id: int) -> None:
    """Revoke lease LEASE_ID (hex), deleting its keys."""
    settings = _settings()
    settings.client().lease_revoke(lease_id)
    if settings.json:
        _emit_json({"id": lease_id, "revoked": True})
    else:
        click.echo(f"lease {lease_id:x} revoked")


@lease.command("ttl")
@click.argument("lease_id", type=HEX_ID)
@click.option("--keys", is_flag=True, help="Also list the keys attached.")
def lease_ttl(lease_id: int, keys: bool) -> None:
    """Remaining time of lease LEASE_ID (hex)."""
    settings = _settings()
    result = settings.client().lease_time_to_live(lease_id, keys)
    if settings.json:
        value: dict[str, Any] = {
            "header": _header_json(result.header),
            "id": result.id,
            "ttl": result.ttl,
            "granted_ttl": result.granted_ttl,
        }
        if keys:
            value["keys"] = [_text(k)[0] for k in result.keys]
        _emit_json(value)
        return
    if result.ttl < 0:
        click.echo(f"lease {lease_id:x} already expired")
        return
    line = f"lease {lease_id:x} granted with TTL({result.granted_ttl}s), remaining({result.ttl}s)"
    if keys:
        line += ", attached keys([" + " ".join(_text(k)[0] for k in result.keys) + "])"
    click.echo(line)


@lease.command("list")
def lease_list() -> None:
    """List the live leases."""
    settings = _settings()
    result = settings.client().lease_list()
    if settings.json:
        _emit_json({"header": _header_json(result.header), "leases": list(result.leases)})
        return
    click.echo(f"found {len(result.leases)} leases")
    for lease_id in result.leases:
        click.echo(f"{lease_id:x}")


@lease.command("keep-alive")
@click.argument("lease_id", type=HEX_ID)
@click.option("--once", is_flag=True, help="Refresh once and exit.")
def lease_keep_alive(lease_id: int, once: bool) -> None:
    """Keep lease LEASE_ID (hex) alive until interrupted (or the lease is gone)."""
    settings = _settings()
    kv = settings.client()
    while True:
        sent_at = time.monotonic()
        result = kv.lease_keep_alive_once(lease_id)
        if settings.json:
            _emit_json({"header": _header_json(result.header), "id": lease_id, "ttl": result.ttl})
        else:
            click.echo(f"lease {lease_id:x} keepalived with TTL({result.ttl})")
        if once:
            return
        time.sleep(max(0.1, result.ttl / 3 - (time.monotonic() - sent_at)))


# --------------------------------------------------------------------------- cluster


@main.group()
def member() -> None:
    """List and change the members of the cluster."""


@member.command("list")
@click.option("--linearizable", is_flag=True, help="Confirm the list with the leader.")
def member_list(linearizable: bool) -> None:
    """List the members: ID, status, name, peer URLs, client URLs, is learner."""
    settings = _settings()
    result = settings.client().member_list(linearizable)
    if settings.json:
        _emit_json(
            {
                "header": _header_json(result.header),
                "members": [_member_json(m) for m in result.members],
            }
        )
        return
    for item in result.members:
        _print_member(item)


@member.command("add")
@click.argument("name")
@click.option("--peer-urls", required=True, help="The new member's peer URLs, comma-separated.")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
def member_add(name: str, peer_urls: str, learner: bool) -> None:
    """Add member NAME."""
    settings = _settings()
    urls = [url.strip() for url in peer_urls.split(",") if url.strip()]
    result = settings.client().member_add(name, urls, learner=learner)
    if settings.json:
        _emit_json(
            {
                "header": _header_json(result.header),
                "member": _member_json(result.member),
                "members": [_member_json(m) for m in result.members],
            }
        )
    else:
        kind = "learner" if learner else "member"
        click.echo(f"Member {result.member.id:x} added to cluster as a {kind}")


@member.command("promote")
@click.argument("member_id", type=HEX_ID)
def member_promote(member_id: int) -> None:
    """Promote learner MEMBER_ID (hex) to a voting member."""
    settings = _settings()
    result = settings.client().member_promote(member_id)
    if settings.json:
        _emit_json(
            {
                "header": _header_json(result.header),
                "members": [_member_json(m) for m in result.members],
            }
        )
    else:
        click.echo(f"Member {member_id:x} promoted")


@member.command("remove")
@click.argument("member_id", type=HEX_ID)
def member_remove(member_id: int) -> None:
    """Remove member MEMBER_ID (hex)."""
    settings = _settings()
    result = settings.client().member_remove(member_id)
    if settings.json:
        _emit_json(
            {
                "header": _header_json(result.header),
                "members": [_member_json(m) for m in result.members],
            }
        )
    else:
        click.echo(f"Member {member_id:x} removed from cluster")


@main.command()
def status() -> None:
    """The status of every endpoint: member id, leader, term, index, revision."""
    settings = _settings()
    kv = settings.client()
    rows: list[StatusResult] = []
    failed: list[tuple[str, errors.PnyxError]] = []
    for endpoint in kv.endpoints:
        try:
            rows.append(kv.status(endpoint))
        except errors.UnavailableError as exc:
            failed.append((endpoint, exc))
    if settings.json:
        _emit_json([_status_json(row) for row in rows])
    else:
        for row in rows:
            click.echo(
                ", ".join(
                    [
                        row.endpoint,
                        f"{row.member_id:x}",
                        row.version,
                        f"{row.db_size} B",
                        "leader" if row.member_id == row.leader else "follower",
                        "learner" if row.is_learner else "voter",
                        f"term {row.raft_term}",
                        f"index {row.raft_index}",
                        f"applied {row.raft_applied_index}",
                        f"revision {row.revision}",
                        "; ".join(row.errors),
                    ]
                ).rstrip(", ")
            )
    for endpoint, error in failed:
        click.echo(f"Error: {endpoint}: {type(error).__name__}: {error.message}", err=True)
    if failed:
        raise click.exceptions.Exit(EXIT_UNAVAILABLE)


@main.command()
def health() -> None:
    """Check every endpoint: healthy if it knows a leader and serves a linearizable
    read (which needs a quorum). Exit code 1 if any endpoint is unhealthy."""
    settings = _settings()
    kv = settings.client()
    reports: list[dict[str, Any]] = []
    for endpoint in kv.endpoints:
        started = time.monotonic()
        error = ""
        try:
            state = kv.status(endpoint)
            if not state.leader:
                error = "no leader"
            elif state.errors:
                error = "; ".join(state.errors)
            else:
                kv._request(RangeRequest(b"health"), None, endpoint)
        except errors.PnyxError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
        took = time.monotonic() - started
        reports.append(
            {
                "endpoint": endpoint,
                "health": not error,
                "took": f"{took * 1000:.1f}ms",
                "error": error,
            }
        )
    if settings.json:
        _emit_json(reports)
    else:
        for report in reports:
            if report["health"]:
                click.echo(f"{report['endpoint']} is healthy: took = {report['took']}")
            else:
                click.echo(f"{report['endpoint']} is unhealthy: {report['error']}", err=True)
    if not all(report["health"] for report in reports):
        raise click.exceptions.Exit(EXIT_REFUSED)


def _write_out_here(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _settings().json = value == "json"


# `-w/--write-out` is a global option (`pnyx -w json get k`) and is also accepted after
# the command (`pnyx get k -w json`), as etcdctl users type it.
for _command in (
    put,
    get,
    delete,
    compact,
    txn,
    watch,
    status,
    health,
    *lease.commands.values(),
    *member.commands.values(),
):
    _command.params.append(
        click.Option(
            ["-w", "--write-out"],
            type=click.Choice(["simple", "json"]),
            default=None,
            expose_value=False,
            callback=_write_out_here,
            help="Output format (also accepted before the command).",
        )
    )


# `pnyx node` and `pnyx up` live in their own module (owned by the server side).
from pnyx.clients.cli_server import node as _node_command  # noqa: E402
from pnyx.clients.cli_server import up as _up_command  # noqa: E402

main.add_command(_node_command, "node")
main.add_command(_up_command, "up")

# `pnyx bench ...` and `pnyx check perf` (clients/cli_bench.py).
from pnyx.clients.cli_bench import bench as _bench_command  # noqa: E402
from pnyx.clients.cli_bench import check as _check_command  # noqa: E402

main.add_command(_bench_command, "bench")
main.add_command(_check_command, "check")

# `pnyx lock` and `pnyx elect` (clients/cli_recipes.py).
from pnyx.clients.cli_recipes import elect as _elect_command  # noqa: E402
from pnyx.clients.cli_recipes import lock as _lock_command  # noqa: E402

main.add_command(_lock_command, "lock")
main.add_command(_elect_command, "elect")
