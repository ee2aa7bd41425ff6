#!/usr/bin/env python3
"""Make (or re-make) the pinned constraints file for one Airflow version: a ``pip freeze`` of the test venv.

    python3 scripts/make_constraints.py 3.3.2 constraints.txt                # the newest; `make test` uses it
    python3 scripts/make_constraints.py 3.0.6 constraints/airflow-3.0.txt    # an older minor
    make constraints                                                         # all of them

It installs ``apache-airflow==<version>`` and this package with its ``test`` extra into a throw-away venv and
writes ``pip freeze`` of it, minus this package. To avoid churning pins that did not need to change, the
install is constrained by the pins already there: those of ``<output>`` first, then those of the root
``constraints.txt`` (so every Airflow version runs the same libraries wherever it can). A pin that conflicts
with what this Airflow or pyproject.toml needs is dropped (pip names it) and resolved afresh; the dropped pins
are printed. So after a dependency is added to pyproject.toml, re-running this adds just that dependency's
pins (and moves only the pins it forces).

Only the standard library is used: it runs with the same ``python3`` the Makefile uses, before any venv exists.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEWEST = ROOT / "constraints.txt"
#: Pinned by the version argument, never carried over from a seed file.
AIRFLOW_ITSELF = {"apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk"}
MAX_ROUNDS = 40
#: Releases newer than an Airflow release that break it although its metadata allows them (Airflow's own
#: constraints files pin what its CI tested; ours are made from our venv, so they need saying). Found by the
#: Airflow-facing tests on each version, which fail with the newer release.
KNOWN_BREAKAGE = {
    # svcs 26 detaches its registry when the lifespan's generator is collected; the in-process Execution API
    # of 3.0-3.2 (`airflow dags test`) lets that happen, and every task then fails with "'State' object has no
    # attribute 'svcs_registry'". Airflow 3.3 keeps the lifespan open.
    # 3.1 caps these two itself. FastAPI 0.118 rejects the Task SDK's request bodies ("Input should be a valid
    # dictionary"); universal_pathlib 0.3 refuses every ObjectStoragePath ("detected protocol ... incompatible").
    "3.0": ["svcs<26", "fastapi<0.118", "universal_pathlib<0.3"],
    "3.1": ["svcs<26"],
    "3.2": ["svcs<26"],
}
# The lines under pip's "The conflict is caused by:", e.g. "The user requested (constraint) sqlalchemy==2.1.9"
# or "alembic 1.20.1 depends on SQLAlchemy>=2.0": every seeded package named there is a candidate to drop.
CONFLICT = re.compile(r"^\s+(?:The user requested \(constraint\) )?([A-Za-z0-9._-]+)[\s=<>!~,;\[]", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: "name==version"}`` of a constraints file (comments and blank lines ignored)."""
    pins: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                pins[canonical(line.split("==", 1)[0])] = line
    return pins


def package_name() -> str:
    match = re.search(r'^name\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    if not match:
        sys.exit("pyproject.toml has no [project] name")
    return canonical(match.group(1))


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


#: Run in the venv: the requirements of installed distributions whose environment marker (Python version,
#: platform; not an extra) is false here.
_ELSEWHERE = r"""
import importlib.metadata as md, json, re
from packaging.requirements import Requirement
names = set()
for dist in md.distributions():
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker and "extra" not in str(req.marker) and not req.marker.evaluate():
            names.add(re.sub(r"[-_.]+", "-", req.name).lower())
print(json.dumps(sorted(names)))
"""


def _needed_elsewhere(python: Path) -> set[str]:
    done = subprocess.run([str(python), "-c", _ELSEWHERE], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("airflow_version", help="e.g. 3.0.6")
    parser.add_argument("output", type=Path, help="e.g. constraints/airflow-3.0.txt")
    args = parser.parse_args()
    if not re.fullmatch(r"\d+\.\d+\.\d+", args.airflow_version):
        parser.error(f"airflow_version must be a release such as 3.0.6, got {args.airflow_version!r}")
    output = args.output if args.output.is_absolute() else Path.cwd() / args.output

    seed = {**read_pins(NEWEST), **read_pins(output)}
    own = package_name()
    for name in (*AIRFLOW_ITSELF, own):
        seed.pop(name, None)
    seeded = set(seed.values())

    with tempfile.TemporaryDirectory(prefix="dexcare-constraints-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.create(env_dir, with_pip=True)
        python = env_dir / "bin" / "python"
        upgraded = pip(python, "install", "--quiet", "--upgrade", "pip")
        if upgraded.returncode:
            sys.stderr.write(upgraded.stdout + upgraded.stderr)
            return 1
        dropped: list[str] = []
        for _ in range(MAX_ROUNDS):
            seed_file = Path(tmp) / "seed.txt"
            known = KNOWN_BREAKAGE.get(args.airflow_version.rsplit(".", 1)[0], [])
            seed_file.write_text("".join(f"{pin}\n" for pin in [*known, *seed.values()]))
            print(f"Installing apache-airflow=={args.airflow_version} and .[test] with {len(seed)} seed pins ...")
            done = pip(
                python, "install", "-c", str(seed_file), f"apache-airflow=={args.airflow_version}",
                "-e", ".[test]",
            )
            if done.returncode == 0:
                break
            text = done.stdout + done.stderr
            causes = text.partition("The conflict is caused by:")[2].partition("\n\n")[0]
            conflicting = {canonical(name) for name in CONFLICT.findall(causes)} & set(seed)
            if not conflicting:
                sys.stderr.write(text[-6000:])
                print("pip failed for a reason other than a seed pin; nothing written.", file=sys.stderr)
                return 1
            for name in sorted(conflicting):
                dropped.append(seed.pop(name))
        else:
            print(f"Gave up after {MAX_ROUNDS} rounds of conflicting pins.", file=sys.stderr)
            return 1
        frozen = pip(python, "freeze", "--exclude-editable")
        if frozen.returncode:
            sys.stderr.write(frozen.stderr)
            return 1
        lines = [line for line in frozen.stdout.splitlines() if canonical(line.split("==", 1)[0]) != own]
        # A dependency that only another Python needs (e.g. redis wants async-timeout below Python 3.11.3, the
        # Docker image's Debian Python) is not in this venv; its seed pin is kept for that interpreter.
        frozen_names = {canonical(line.split("==", 1)[0]) for line in lines}
        needed = _needed_elsewhere(python) - frozen_names
        elsewhere = [pin for name, pin in seed.items() if name in needed]
        lines = sorted([*lines, *elsewhere], key=lambda line: line.split("==", 1)[0].lower())  # as pip freeze

    shown = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
    header = (
        f"# pip freeze of the test venv for apache-airflow=={args.airflow_version}, minus this package.\n"
        f"# Re-make it with: python3 scripts/make_constraints.py {args.airflow_version} {shown}\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(header + "\n".join(lines) + "\n")
    print(f"Wrote {shown}: {len(lines)} pins.")
    if dropped:
        print("Seed pins that conflicted and were resolved afresh: " + ", ".join(sorted(dropped)))
    if elsewhere:
        print("Kept for another Python (not installed here): " + ", ".join(elsewhere))
    fresh = sorted(
        line for line in lines if line not in seeded and canonical(line.split("==")[0]) not in AIRFLOW_ITSELF
    )
    if fresh:
        print("Pins that were not in the seed: " + ", ".join(fresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
