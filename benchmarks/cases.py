"""What the benchmarks that measure each case in a fresh process share: the hidden ``--case`` entry point.

Peak RSS (``ru_maxrss``) only ever grows within a process, so a benchmark that compares the memory of two
ways of doing one job runs each in a child process of its own: the script calls itself with ``--case``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

Case = Callable[[str, dict[str, Any]], dict[str, Any]]


def parse(description: str | None, run_case: Case) -> argparse.Namespace | None:
    """The benchmark's options (``--rows``); ``None`` when this process is a child, which has already run its
    case and printed the result as its last line."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="distinct visits in the report")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.case:
        print(json.dumps(run_case(options.case, json.loads(options.args))))
        return None
    return options


def in_child(script: str, case: str, args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run ``case`` of ``script`` in a fresh interpreter and return what it printed last."""
    out = subprocess.run([sys.executable, script, "--case", case, "--args", json.dumps(args)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])
