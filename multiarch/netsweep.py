"""Release the network of RUN containers that died without saying goodbye.

Under `--isolation oci` buildah gives each RUN step a network namespace on the CNI bridge
(`cni-podman0`): an address reserved under /var/lib/cni/networks/podman, NAT and forward
rules in iptables, and a result cached under /var/lib/cni/results. buildah releases them
when the step ends. When the step is killed instead (cancellation, a timeout, SIGKILL of
the worker: the whole PID namespace goes at once), nothing releases them, and they pile up
machine-wide, outside any run's directories.

A container is dead when the host end of its veth pair is gone: the kernel deletes the
pair with the namespace, whichever run (or work directory) it belonged to. For each dead
container this module runs the CNI plugins' own DEL, in reverse order, with the cached
configuration and result, exactly as libcni would have: the plugins (bridge and its IPAM,
portmap, firewall) remove their own rules and reservations. The bridge plugin cannot
remove its masquerade rules without the namespace, so those are found by the comment it
tags them with (`name: "podman" id: "<container>"`) and removed with their chain.
A step killed half-way through its network setup can leave a reservation or masquerade
rules without a cached result; those go too, once nothing names their container any more.
Entries younger than `MIN_AGE_S` are left alone: their setup may still be under way.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multiarch.errors import MultiarchError
from multiarch.process import capture

CNI_RESULTS = Path("/var/lib/cni/results")
CNI_RESERVATIONS = Path("/var/lib/cni/networks")
CNI_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
BUILDAH_PREFIX = "buildah-"  # buildah's RUN containers; other tools' entries are not ours
MIN_AGE_S = 60.0
PLUGIN_TIMEOUT_S = 30
MASQ_COMMENT_RE = re.compile(r'^name: "(?P<network>[^"]+)" id: "(?P<container>[^"]+)"$')


def sweep_dead_networks(*, results: Path = CNI_RESULTS, reservations: Path = CNI_RESERVATIONS,
                        emit: Callable[[str], None] = lambda _: None) -> list[str]:
    """Release every dead buildah RUN container's network; returns what was released."""
    released = []
    cached_ids = set()
    for cached in sorted(results.iterdir()) if results.is_dir() else []:
        entry = _read(cached)
        if entry is None or not str(entry.get("containerId", "")).startswith(BUILDAH_PREFIX):
            continue
        if time.time() - cached.stat().st_mtime < MIN_AGE_S or _alive(entry):
            cached_ids.add(entry["containerId"])
            continue
        error = _delete(entry)
        if error:
            cached_ids.add(entry["containerId"])
            emit(f"could not release the network of {entry['containerId']}: {error}")
            continue
        cached.unlink(missing_ok=True)
        addresses = ", ".join(ip.get("address", "?") for ip in _result(entry).get("ips", []))
        released.append(f"{entry['containerId']} ({addresses or 'no address'})")
    reserved = _sweep_reservations(reservations, keep=cached_ids, released=released)
    _sweep_masquerade(keep=cached_ids | reserved, released=released)
    return released


def _sweep_reservations(root: Path, *, keep: set[str], released: list[str]) -> set[str]:
    """Drop old address reservations of buildah containers that have no cached result.

    Returns the containers whose reservations stay (too young to judge, or cached).
    """
    kept: set[str] = set()
    for network in sorted(root.iterdir()) if root.is_dir() else []:
        for reservation in sorted(network.glob("*.*.*.*")):
            try:
                container = reservation.read_text().split("\n", 1)[0].strip()
                young = time.time() - reservation.stat().st_mtime < MIN_AGE_S
            except OSError:
                continue
            if not container.startswith(BUILDAH_PREFIX):
                continue
            if young or container in keep:
                kept.add(container)
                continue
            reservation.unlink(missing_ok=True)
            released.append(f"{container} (address {reservation.name} of {network.name})")
    return kept


def _sweep_masquerade(*, keep: set[str], released: list[str]) -> None:
    """Remove the bridge plugin's masquerade rules of buildah containers nothing names."""
    try:
        listing = capture(["iptables", "-t", "nat", "-S", "POSTROUTING"],
                          what="listing masquerade rules", timeout_s=30)
    except MultiarchError:
        return
    for line in listing.stdout.splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", "POSTROUTING"] or "--comment" not in words or "-j" not in words:
            continue
        match = MASQ_COMMENT_RE.match(words[words.index("--comment") + 1])
        chain = words[words.index("-j") + 1]
        if match is None or not chain.startswith("CNI-"):
            continue
        container = match["container"]
        if not container.startswith(BUILDAH_PREFIX) or container in keep:
            continue
        for argv in (["iptables", "-t", "nat", "-D", *words[1:]],
                     ["iptables", "-t", "nat", "-F", chain],
                     ["iptables", "-t", "nat", "-X", chain]):
            with contextlib.suppress(MultiarchError):
                capture(argv, what="removing a masquerade rule", timeout_s=30)
        released.append(f"{container} (masquerade chain {chain})")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("kind") == "cniCacheV1" else None


def _result(entry: dict[str, Any]) -> dict[str, Any]:
    result = entry.get("result")
    return result if isinstance(result, dict) else {}


def _alive(entry: dict[str, Any]) -> bool:
    """True while the host end of the container's veth pair exists."""
    host_ends = [i.get("name", "") for i in _result(entry).get("interfaces", [])
                 if not i.get("sandbox") and str(i.get("name", "")).startswith("veth")]
    if not host_ends:
        return True  # cannot tell: leave it
    return any(Path("/sys/class/net", name).exists() for name in host_ends)


def _delete(entry: dict[str, Any]) -> str | None:
    """CNI DEL through each plugin of the cached network list, last plugin first."""
    try:
        network = json.loads(base64.b64decode(entry["config"]))
    except (KeyError, ValueError):
        return "its cached configuration cannot be read"
    args = ";".join(f"{k}={v}" for k, v in entry.get("cniArgs") or [])
    for plugin in reversed(network.get("plugins", [])):
        binary = _plugin(str(plugin.get("type", "")))
        if binary is None:
            return f"CNI plugin {plugin.get('type')!r} not found in {', '.join(CNI_PLUGIN_DIRS)}"
        config = {**plugin, "name": network.get("name"),
                  "cniVersion": network.get("cniVersion"), "prevResult": _result(entry)}
        env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": entry["containerId"],
               "CNI_NETNS": "", "CNI_IFNAME": entry.get("ifName", "eth0"), "CNI_ARGS": args,
               "CNI_PATH": os.pathsep.join(CNI_PLUGIN_DIRS)}
        try:
            done = capture([str(binary)], what=f"CNI DEL ({plugin.get('type')})", env=env,
                           stdin=json.dumps(config).encode(), timeout_s=PLUGIN_TIMEOUT_S)
        except MultiarchError as exc:
            return f"{plugin.get('type')}: {exc}"
        if not done.ok:
            return f"{plugin.get('type')}: {done.last_error()}"
    return None


def _plugin(kind: str) -> Path | None:
    if not kind or "/" in kind:
        return None
    for directory in CNI_PLUGIN_DIRS:
        candidate = Path(directory, kind)
        if candidate.is_file():
            return candidate
    return None
