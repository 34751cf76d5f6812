"""How long an unschedulable build pod may wait for a node: pure, tested on dicts.

A fixed grace fails builds on clusters that scale arm64 nodes from zero (a new node takes
minutes) and makes builds wait for nothing on clusters that will never have one. So:

- a scale-up is under way (the cluster autoscaler's TriggeredScaleUp event on the pod, or
  the scheduler's status.nominatedNodeName): wait, bounded only by the build's timeout;
- no node of the pod's architecture exists (the scheduler's message says every node
  failed the node selector/affinity, "0/2 nodes are available: 2 node(s) didn't match
  Pod's node affinity/selector", or there are no nodes at all) and no scale-up: fail after
  NO_NODE_NOTICE_S at most. Not at the first event: the autoscaler scans every 10 s, so
  its TriggeredScaleUp follows the scheduler's verdict by up to that much;
- otherwise (nodes exist but are full, tainted, cordoned): fail after the configured
  `unschedulable_grace_s`, since capacity may free up as other builds end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

NO_NODE_NOTICE_S = 15.0
SELECTOR_MISMATCH = "didn't match Pod's node affinity/selector"
_AVAILABLE = re.compile(r"^0/(?P<total>\d+) nodes are available: (?P<reasons>[^.]*)")
_REASON = re.compile(r"^(?P<count>\d+) (?P<text>.*)$")


def patience_s(pod: Mapping[str, Any], *, message: str, grace_s: float,
               scale_up: bool) -> float | None:
    """Seconds an unschedulable pod may wait from when it was first seen so; None: wait
    until the build's own timeout."""
    if scale_up or (pod.get("status") or {}).get("nominatedNodeName"):
        return None
    if no_node_matches(message):
        return min(float(grace_s), NO_NODE_NOTICE_S)
    return float(grace_s)


def no_node_matches(message: str) -> bool:
    """The scheduler found no node with the pod's labels (architecture) at all."""
    text = message.strip()
    if text.startswith("no nodes available to schedule pods"):
        return True
    found = _AVAILABLE.match(text)
    if found is None:
        return False
    total = int(found["total"])
    if total == 0:
        return True
    for reason in found["reasons"].split(", "):
        parts = _REASON.match(reason.strip())
        if parts and int(parts["count"]) == total and SELECTOR_MISMATCH in parts["text"]:
            return True
    return False
