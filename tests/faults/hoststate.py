"""What a RUN container can leave on the host outside its run's directories.

runc's state (/run/runc), buildah's RUN bundles (/var/tmp) and the CNI network of the
container (an address reservation, a cached result, iptables rules) are machine-wide. The
fault scenarios snapshot them before a run and check what is left after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

CONTAINER_RE = re.compile(r"buildah-buildah[0-9]+")
RUNTIME_DIRS = (Path("/run/runc"), Path("/var/tmp"))
CNI_DIRS = (Path("/var/lib/cni/results"), *Path("/var/lib/cni/networks").glob("*"))
CNI_BOOKKEEPING = ("lock", "last_reserved_ip.0")


def host_runtime_state() -> set[Path]:
    places = [*RUNTIME_DIRS, *CNI_DIRS]
    return {path for place in places if place.is_dir() for path in place.iterdir()}


def runtime_files_since(before: set[Path]) -> list[Path]:
    """New runc state or RUN bundles: these must stay inside the run's directories."""
    return sorted(p for p in host_runtime_state() - before if p.parent in RUNTIME_DIRS)


def networks_since(before: set[Path]) -> list[Path]:
    """CNI results and address reservations that appeared since `before`."""
    return sorted(p for p in host_runtime_state() - before
                  if p.parent not in RUNTIME_DIRS and p.name not in CNI_BOOKKEEPING)


def age_networks(networks: list[Path]) -> set[str]:
    """Make the entries look an hour old (the sweep spares young ones); their containers."""
    containers = set()
    for path in networks:
        containers.update(CONTAINER_RE.findall(path.read_text()))
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    return containers


def still_held(networks: list[Path], containers: set[str]) -> list[str]:
    """Entries and NAT rules of these containers that are still there."""
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True,
                           check=False).stdout.splitlines()
    return ([str(p) for p in networks if p.exists()]
            + [rule for rule in rules if any(f'"{c}"' in rule for c in containers)])


def processes_with(text: str) -> list[str]:
    """Processes on the host whose command line holds `text` (this test process excepted).

    No filter on "pytest": the tests' directories live under /tmp/pytest-of-root.
    """
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found
