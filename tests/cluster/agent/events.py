"""Events as the kubelet records them (core/v1, aggregated by count).

Runners read `Failed`/`BackOff` (image pulls), `FailedMount` and `Evicted` events to
explain a stuck or failed pod, so the agent writes them with the reasons, types, source
and messages a kubelet uses, and bumps `count` on a repeat instead of creating another
(the kubelet's event correlator does the same). Writes go through the API as the node.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from tests.cluster.agent.kubeapi import ApiError, KubeApi, Obj, now_rfc3339

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, api: KubeApi, *, host: str, component: str = "kubelet") -> None:
        self.api, self.host, self.component = api, host, component
        self._seen: dict[tuple[str, str, str], tuple[str, str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, involved: Obj, *, reason: str, message: str, type: str = "Normal") -> None:
        """Fire and forget (the kubelet's recorder is asynchronous too)."""
        task = asyncio.create_task(self._write(involved, reason, message, type))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _write(self, involved: Obj, reason: str, message: str, type: str) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        now = now_rfc3339()
        try:
            if key in self._seen:
                ns, name, count = self._seen[key]
                self._seen[key] = (ns, name, count + 1)
                await self.api.patch(f"/api/v1/namespaces/{ns}/events/{name}",
                                     {"count": count + 1, "lastTimestamp": now})
                return
            name = f"{meta['name']}.{secrets.token_hex(8)}"
            self._seen[key] = (namespace, name, 1)
            await self.api.create(f"/api/v1/namespaces/{namespace}/events", {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "kind": involved.get("kind", "Pod"),
                    "namespace": namespace,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "apiVersion": involved.get("apiVersion", "v1"),
                    "resourceVersion": meta.get("resourceVersion", ""),
                },
                "reason": reason,
                "message": message,
                "type": type,
                "source": {"component": self.component, "host": self.host},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "reportingComponent": self.component,
                "reportingInstance": self.host,
            })
        except (ApiError, OSError) as exc:  # an event is best effort, as in the kubelet
            log.warning("event %s for %s not recorded: %s", reason, meta.get("name"), exc)
