"""One node: its Node object and Lease, the pods bound to it, and the agent's listeners.

Registration and heartbeats follow the kubelet: the Node is created with its labels
(kubernetes.io/arch, kubernetes.io/os, kubernetes.io/hostname), addresses, capacity,
nodeInfo and the kubelet endpoint's port; the Lease in kube-node-lease is renewed every
LEASE_RENEW_S and the Ready condition patched through `nodes/status`, so the real
node-lifecycle controller marks the node NotReady (and taints it unreachable) when the
agent goes silent. Pods bound here are listed and watched with a fieldSelector on
spec.nodeName (all the Node authorizer allows), relisted on 410 Gone, and handed to the
kubelet part on every change and every SYNC_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import signal
import uuid
from pathlib import Path

from aiohttp import web

from multiarch.runners.kubernetes.manifests import ANNOTATION_EMULATED
from tests.cluster.agent import server
from tests.cluster.agent.events import EventRecorder
from tests.cluster.agent.kubeapi import ApiError, KubeApi, Obj, now_micro, now_rfc3339
from tests.cluster.agent.kubelet import Kubelet, KubeletConfig, PodWorker
from tests.cluster.agent.logs import LogStore

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_RENEW_S = 2.0
STATUS_EVERY_S = 10.0
SYNC_S = 0.5
WATCH_S = 60
KUBELET_VERSION = "v1.36.3-multiarch-agent"


class NodeAgent:
    def __init__(self, *, name: str, arch: str, emulated: bool, labels: dict[str, str],
                 api: KubeApi, config: KubeletConfig, kubelet_port: int, control_port: int,
                 serving: tuple[Path, Path], ca: Path) -> None:
        self.name, self.arch, self.emulated, self.labels = name, arch, emulated, labels
        self.api, self.config = api, config
        self.kubelet_port, self.control_port = kubelet_port, control_port
        self.serving, self.ca = serving, ca
        self.events = EventRecorder(api, host=name)
        self.logs = LogStore()
        self.kubelet = Kubelet(node=name, index=1, api=api, events=self.events, logs=self.logs,
                               config=config)
        self.pods: dict[str, Obj] = {}
        self.errors: list[BaseException] = []
        self.heartbeat_paused = False
        self.lost = False
        self._changed = asyncio.Event()
        self._node_uid = ""

    # --- the Node ------------------------------------------------------------------

    def node_body(self) -> Obj:
        cpus = str(os.cpu_count() or 1)
        memory = _meminfo_kib()
        resources = {"cpu": cpus, "memory": f"{memory}Ki", "pods": "110",
                     "ephemeral-storage": "100Gi"}
        annotations = {"node.alpha.kubernetes.io/ttl": "0"}
        if self.emulated:
            annotations[ANNOTATION_EMULATED] = "true"
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/arch": self.arch, "beta.kubernetes.io/arch": self.arch,
                    "kubernetes.io/os": "linux", "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": self.name, **self.labels,
                },
                "annotations": annotations,
            },
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": self.conditions(),
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                "nodeInfo": {
                    "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.name).hex,
                    "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                    "bootID": str(uuid.uuid4()),
                    "kernelVersion": platform.release(),
                    "osImage": "multiarch-builder test node agent",
                    "containerRuntimeVersion": "multiarch-agent://0",
                    "kubeletVersion": KUBELET_VERSION,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": self.arch,
                },
            },
        }

    def conditions(self) -> list[Obj]:
        now = now_rfc3339()
        rows = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID"),
                ("Ready", "True", "KubeletReady")]
        return [{"type": kind, "status": status, "reason": reason,
                 "message": f"node agent {self.name}: {reason}",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
                for kind, status, reason in rows]

    async def register(self) -> None:
        try:
            created = await self.api.create("/api/v1/nodes", self.node_body())
        except ApiError as exc:
            if exc.status != 409:
                raise
            body = self.node_body()
            await self.api.patch(f"/api/v1/nodes/{self.name}", {"metadata": body["metadata"]})
            created = await self.api.patch(f"/api/v1/nodes/{self.name}/status",
                                           {"status": body["status"]}, strategic=True)
        self._node_uid = created["metadata"]["uid"]

    async def heartbeat(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.name}"
        last_status = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self.heartbeat_paused:
                try:
                    await self._renew(path)
                    if loop.time() - last_status >= STATUS_EVERY_S:
                        await self.api.patch(f"/api/v1/nodes/{self.name}/status",
                                             {"status": {"conditions": self.conditions()}},
                                             strategic=True)
                        last_status = loop.time()
                except (ApiError, OSError) as exc:
                    log.warning("heartbeat: %s", exc)
            await asyncio.sleep(LEASE_RENEW_S)

    async def _renew(self, path: str) -> None:
        lease = await self.api.get(path)
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                "renewTime": now_micro()}
        if lease is None:
            await self.api.create(path.rsplit("/", 1)[0], {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.name, "uid": self._node_uid}]},
                "spec": spec,
            })
        else:
            lease["spec"].update(spec)
            await self.api.put(path, lease)

    # --- pods ------------------------------------------------------------------------

    async def watch_pods(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.name}"}
        delay = 0.5
        while True:
            try:
                listed = await self.api.get("/api/v1/pods", **selector)
                assert listed is not None
                self.pods = {p["metadata"]["uid"]: _with_kind(p) for p in listed["items"]}
                self._changed.set()
                version = listed["metadata"]["resourceVersion"]
                while True:
                    async for kind, pod in self.api.watch("/api/v1/pods", resource_version=version,
                                                          timeout_s=WATCH_S, **selector):
                        version = pod["metadata"].get("resourceVersion", version)
                        if kind == "BOOKMARK":
                            continue
                        uid = pod["metadata"]["uid"]
                        if kind == "DELETED":
                            self.pods.pop(uid, None)
                        else:
                            self.pods[uid] = _with_kind(pod)
                        self._changed.set()
                    delay = 0.5
            except (TimeoutError, ApiError, OSError) as exc:
                if not (isinstance(exc, ApiError) and exc.status == 410):
                    log.warning("watching pods: %s (again in %.1fs)", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)

    async def sync_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), SYNC_S)
            self._changed.clear()
            if self.lost:
                continue
            try:
                self.kubelet.sync(list(self.pods.values()))
            except Exception as exc:
                log.exception("the node agent failed")
                self.errors.append(exc)
            for worker in list(self.kubelet.workers.values()):
                task = worker.task
                if worker.done and task is not None and not task.cancelled():
                    exc = task.exception()
                    if exc is not None and exc not in self.errors:
                        self.errors.append(exc)

    # --- test hooks --------------------------------------------------------------------

    def _worker(self, namespace: str, name: str) -> PodWorker:
        worker = self.kubelet.find(namespace, name)
        if worker is None:
            raise LookupError(f"pod {namespace}/{name} is not running on {self.name}")
        return worker

    def evict(self, namespace: str, name: str) -> None:
        self.kubelet.evict(self._worker(namespace, name))

    def oom_kill(self, namespace: str, name: str, container: str | None) -> None:
        worker = self._worker(namespace, name)
        names = [container] if container else list(worker.running)
        if not any(worker.oom_kill(n) for n in names):
            raise LookupError(f"pod {name} has no running container {container or ''}")

    def lose(self) -> None:
        """Power off: processes die, nothing reports any more (no heartbeat, no status)."""
        self.lost = True
        self.heartbeat_paused = True
        self.kubelet.kill_all()

    # --- the process -----------------------------------------------------------------

    async def run(self) -> None:
        await self.register()
        runners = []
        kubelet_runner = web.AppRunner(server.kubelet_app(self))
        await kubelet_runner.setup()
        await web.TCPSite(kubelet_runner, "127.0.0.1", self.kubelet_port,
                          ssl_context=server.serving_context(
                              ca=self.ca, cert=self.serving[0], key=self.serving[1])).start()
        runners.append(kubelet_runner)
        control_runner = web.AppRunner(server.control_app(self))
        await control_runner.setup()
        await web.TCPSite(control_runner, "127.0.0.1", self.control_port).start()
        runners.append(control_runner)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        tasks = [asyncio.create_task(c) for c in
                 (self.heartbeat(), self.watch_pods(), self.sync_loop())]
        await stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.shutdown()
        for runner in runners:
            await runner.cleanup()

    async def shutdown(self) -> None:
        workers = list(self.kubelet.workers.values())
        for worker in workers:
            worker.kill_now()
        pending = [w.task for w in workers if w.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=10)
        for worker in workers:
            worker.clean_up()
        self.config.cgroups.remove_all()


def _with_kind(pod: Obj) -> Obj:
    pod.setdefault("kind", "Pod")
    pod.setdefault("apiVersion", "v1")
    return pod


def _meminfo_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 4 * 1024 * 1024
