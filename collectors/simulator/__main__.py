"""Run the simulator as a process.

``python -m collectors.simulator --port 0 --seed 7 --admin-key KEY [--admin-key KEY2]
[--api-key KEY] [--now 2026-11-24T12:00:00Z] [--host 127.0.0.1] [--fast-and-us]
[--no-people-dimensions]``

Prints exactly one line, ``spendwatch simulator listening on http://127.0.0.1:PORT``, to
stdout (flushed), then serves until SIGTERM or SIGINT and exits 0. Without ``--admin-key``
the single admin key ``sk-ant-admin01-sim`` is accepted; without ``--api-key`` the single
normal API key ``sk-ant-api03-sim`` (the only kind the Models API, ``/v1/models``, accepts).
Nothing else is written to stdout; keys are never printed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import Sequence

from .generator import parse_rfc3339
from .server import DEFAULT_ADMIN_KEYS, DEFAULT_API_KEYS, start_simulator


def serve_forever(
    port: int = 0,
    seed: int = 7,
    admin_keys: Sequence[str] = DEFAULT_ADMIN_KEYS,
    now: datetime | None = None,
    host: str = "127.0.0.1",
    api_keys: Sequence[str] = DEFAULT_API_KEYS,
    fast_and_us: bool = False,
    people_dimensions: bool = True,
) -> int:
    """Start the simulator, print the one ``listening on`` line to stdout, serve until SIGTERM
    or SIGINT (or KeyboardInterrupt), close, and return 0.

    Signal handlers are installed only when called from the main thread; the previous
    handlers are restored before returning.
    """
    server = start_simulator(seed=seed, admin_keys=tuple(admin_keys) or DEFAULT_ADMIN_KEYS, now=now,
                             host=host, port=port, api_keys=tuple(api_keys) or DEFAULT_API_KEYS,
                             fast_and_us=fast_and_us, people_dimensions=people_dimensions)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[int(sig)] = signal.signal(sig, _on_signal)
    try:
        sys.stdout.write(f"spendwatch simulator listening on {server.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and :func:`serve_forever`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m collectors.simulator",
                                     description="Local simulator of the Anthropic usage and cost APIs.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port, 0 for a free one (default 0)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic organization (default 7)")
    parser.add_argument(
        "--admin-key", action="append", dest="admin_keys", metavar="KEY",
        help="an accepted admin key (repeatable; default sk-ant-admin01-sim)",
    )
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", metavar="KEY",
        help="an accepted normal API key, for /v1/models (repeatable; default sk-ant-api03-sim)",
    )
    parser.add_argument("--now", default=None, help="fixed clock, RFC 3339 (default: the real clock)")
    parser.add_argument(
        "--fast-and-us", action="store_true",
        help="also serve fast mode and US-only inference traffic on the models that offer them (default off)",
    )
    parser.add_argument(
        "--no-people-dimensions", action="store_true",
        help="an organization without the people and product Analytics dimensions (403 on product, actor, "
             "actor_type, rbac_group_id, user_profile_id)",
    )
    args = parser.parse_args(argv)
    now = None
    if args.now:
        try:
            now = parse_rfc3339(args.now)
        except ValueError as exc:
            parser.error(f"--now: {exc}")
    admin_keys = tuple(args.admin_keys or DEFAULT_ADMIN_KEYS)
    api_keys = tuple(args.api_keys or DEFAULT_API_KEYS)
    if set(admin_keys) & set(api_keys):
        parser.error("--api-key: a key cannot be both an admin key and a normal API key")
    return serve_forever(port=args.port, seed=args.seed, admin_keys=admin_keys, now=now,
                         host=args.host, api_keys=api_keys, fast_and_us=args.fast_and_us,
                         people_dimensions=not args.no_people_dimensions)


if __name__ == "__main__":
    sys.exit(main())
