"""Events as the controllers and the kubelet record them (core/v1, aggregated by count).

Runners read `FailedScheduling`, `Failed`/`BackOff` (image pulls) and `Evicted` events to
explain a stuck or failed pod, so the fake writes them with the reasons, types, sources
and messages a real cluster uses, and bumps `count` instead of repeating one.
"""

from __future__ import annotations

import secrets

from tests.kube.store import EVENTS, Obj, Store, now_rfc3339


def record(
    store: Store,
    involved: Obj,
    *,
    reason: str,
    message: str,
    type: str = "Normal",
    component: str,
    host: str | None = None,
) -> None:
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    for event in store.list(EVENTS, namespace):
        ref = event["involvedObject"]
        if (
            ref.get("uid") == meta["uid"]
            and event["reason"] == reason
            and event["message"] == message
        ):
            event["count"] = event.get("count", 1) + 1
            event["lastTimestamp"] = now_rfc3339()
            store.replace(EVENTS, event)
            return
    now = now_rfc3339()
    source = {"component": component, **({"host": host} if host else {})}
    store.create(
        EVENTS,
        namespace,
        {
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}"},
            "involvedObject": {
                "kind": involved["kind"],
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": involved["apiVersion"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": host or "",
        },
    )
