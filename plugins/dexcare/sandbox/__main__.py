"""``python -m dexcare.sandbox``: the sandbox as a process, for DAG development and other test harnesses.

Prints exactly one line, ``DexCare sandbox listening on http://HOST:PORT``, once it accepts connections,
so a parent process can start it with ``--port 0`` and parse the address.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

# dexcare.report imports Airflow, which may log to stdout while it loads its configuration: send any of
# that to stderr, so the listening line stays the only thing on stdout.
with contextlib.redirect_stdout(sys.stderr):
    from dexcare.sandbox.faults import FaultKind, parse_fault_spec
    from dexcare.sandbox.server import SandboxServer

TOKEN_ENV = "DEXCARE_SANDBOX_TOKEN"  # noqa: S105 - the variable's name, not a secret
DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - well-known sandbox default


def _fault(spec: str) -> str:
    try:
        parse_fault_spec(spec)
    except Exception as exc:  # argparse turns this into a usage error naming the flag
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dexcare.sandbox",
        description="Run a local imitation of DexCare's All Visits Reports API until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"service token clients must send; prefer the {TOKEN_ENV} environment variable, since argv "
        f"is visible to other users (default: {DEFAULT_TOKEN!r})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated visits (default: 0)")
    parser.add_argument("--visits-per-day", type=int, default=100, help="visits per day (default: 100)")
    parser.add_argument("--queue-seconds", type=float, default=1.0, help="time QUEUED (default: 1.0)")
    parser.add_argument("--run-seconds", type=float, default=2.0, help="time RUNNING (default: 2.0)")
    parser.add_argument(
        "--no-content-length",
        dest="content_length",
        action="store_false",
        help="send CSV downloads with chunked transfer encoding instead of a Content-Length",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        metavar="KIND[:key=value,...]",
        help="inject a fault at start-up, repeatable; kinds: " + ", ".join(k.value for k in FaultKind)
        + "; keys: count, report_type, endpoint and the kind's parameters "
        "(e.g. http_429:count=2,retry_after=1)",
    )
    return parser


def resolve_token(flag: str | None) -> str:
    """``--token`` wins, then the environment (kept out of ``ps`` output), then the well-known default."""
    return flag or os.environ.get(TOKEN_ENV) or DEFAULT_TOKEN


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = SandboxServer(
        args.host, args.port, resolve_token(args.token), seed=args.seed, visits_per_day=args.visits_per_day,
        queue_seconds=args.queue_seconds, run_seconds=args.run_seconds, content_length=args.content_length,
        faults=args.fault,
    )
    try:
        server.start()
    except OSError as exc:
        print(f"DexCare sandbox cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    # Handlers go in before the line is printed: a parent may signal as soon as it has read it.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            print(f"DexCare sandbox listening on {server.url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
