"""An app that hot-reloads its feature flags from pnyx, with validation.

Run against `make run`'s cluster (or set PNYX_ENDPOINTS / pass --endpoints):

    .venv/bin/python examples/feature_flags.py            # follow flags/ until Ctrl-C
    .venv/bin/pnyx put flags/dark-mode on                 # ...in another shell
    .venv/bin/pnyx put flags/max-items lots               # rejected: the app keeps 20
    .venv/bin/python examples/feature_flags.py --demo     # drives a scripted change set

The flags live under ``flags/``, one key per flag, and the app sees them through
``pnyx.recipes.Config``: a typed view (``bool``, ``int``, ``str``) with defaults and a
whole-config validator (ranges, and "the new checkout needs a rollout percentage").
The view comes from one read of the prefix and follows it with a watch, one store
revision at a time, so a change of several flags written in one transaction appears at
once - never half. A revision that does not parse or validate is rejected: the app keeps
running on the last good flags and says why.

``--demo`` writes, with a pause between steps: a single flag; two flags in one
transaction (the validator requires both); a bad value (rejected, then fixed); a change
that breaks the cross-flag rule (rejected); then prints the history of one flag and
rolls all flags back to an earlier revision in one transaction.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog

from pnyx.clients import Client, PnyxError
from pnyx.recipes.config import Config, ConfigRejection

PREFIX = "flags/"
SCHEMA = {
    "dark-mode": bool,
    "max-items": int,
    "banner": str,
    "new-checkout": bool,
    "rollout-percent": int,
}
DEFAULTS = {
    "dark-mode": False,
    "max-items": 20,
    "banner": "",
    "new-checkout": False,
    "rollout-percent": 0,
}


def validate(flags: Mapping[str, Any]) -> None:
    """Rules across flags; raising rejects the whole revision."""
    if not 1 <= flags["max-items"] <= 1000:
        raise ValueError(f"max-items must be 1..1000, got {flags['max-items']}")
    if not 0 <= flags["rollout-percent"] <= 100:
        raise ValueError(f"rollout-percent must be 0..100, got {flags['rollout-percent']}")
    if flags["new-checkout"] and flags["rollout-percent"] == 0:
        raise ValueError("new-checkout needs a rollout-percent above 0")


def render(flags: Mapping[str, Any]) -> str:
    """What the app does with its flags: here, describe the page it would serve."""
    theme = "dark" if flags["dark-mode"] else "light"
    checkout = (
        f"new checkout for {flags['rollout-percent']}% of users"
        if flags["new-checkout"]
        else "classic checkout"
    )
    banner = f", banner {flags['banner']!r}" if flags["banner"] else ""
    return f"{theme} theme, {flags['max-items']} items per page, {checkout}{banner}"


def on_change(old: Mapping[str, Any], new: Mapping[str, Any], revision: int) -> None:
    changed = [name for name in SCHEMA if old.get(name) != new.get(name)]
    details = ", ".join(f"{name}: {old.get(name)!r} -> {new.get(name)!r}" for name in changed)
    print(f"[revision {revision}] applied {details}")
    print(f"    serving: {render(new)}")


def on_error(rejection: ConfigRejection) -> None:
    print(f"[revision {rejection.revision}] REJECTED, keeping the last good flags: ", end="")
    print("; ".join(f"{p.name or 'flags'}: {p.message}" for p in rejection.problems))


def demo(kv: Client, config: Config, pause: float) -> None:
    """A scripted change set (see the module docstring)."""

    def step(title: str, revision: int) -> None:
        config.wait_for(revision, timeout=10)
        print(f"  ^ {title}")
        time.sleep(pause)

    start = kv.put(PREFIX + "dark-mode", "on").revision
    step("one flag", start)
    both = kv.txn(
        success=[
            kv.op.put(PREFIX + "new-checkout", "true"),
            kv.op.put(PREFIX + "rollout-percent", "25"),
        ]
    ).revision
    step("two flags in one transaction (each alone would break the rule)", both)
    step("a bad value", kv.put(PREFIX + "max-items", "lots").revision)
    step("fixed", kv.put(PREFIX + "max-items", "50").revision)
    step("breaks the cross-flag rule", kv.put(PREFIX + "rollout-percent", "0").revision)
    fixed = kv.put(PREFIX + "rollout-percent", "10").revision
    step("fixed", fixed)
    print("history of max-items:")
    for version in config.history("max-items"):
        shown = "(deleted)" if version.deleted else repr(version.value.decode(errors="replace"))
        verdict = f"  invalid: {version.error}" if version.error else ""
        print(f"    revision {version.revision}: {shown}{verdict}")
    back = config.rollback(both)
    step(f"rolled everything back to revision {both} in one transaction", back)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", default=None, help="default: $PNYX_ENDPOINTS or pnyx up's")
    parser.add_argument("--demo", action="store_true", help="drive a scripted change set, exit")
    parser.add_argument("--reset", action="store_true", help="delete flags/ first")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between demo steps")
    parser.add_argument("--seconds", type=float, default=None, help="exit after this long")
    args = parser.parse_args()
    # Library logs (connections, the rejections we print ourselves) stay quiet.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        with Client(args.endpoints) as kv:
            if args.reset or args.demo:
                kv.delete(PREFIX, prefix=True)
            with Config(
                kv,
                PREFIX,
                schema=SCHEMA,
                defaults=DEFAULTS,
                validator=validate,
                on_change=on_change,
                on_error=on_error,
            ) as config:
                print(f"flags at revision {config.revision or '(none yet: defaults)'}:")
                for name, value in config.snapshot.items():
                    print(f"    {name} = {value!r}")
                print(f"    serving: {render(config.snapshot)}")
                if config.rejected is not None:
                    on_error(config.rejected)
                if args.demo:
                    demo(kv, config, args.pause)
                    return 0
                print(f"following {PREFIX} (try: pnyx put {PREFIX}dark-mode on); Ctrl-C stops")
                threading.Event().wait(args.seconds)
    except KeyboardInterrupt:
        return 130
    except PnyxError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
