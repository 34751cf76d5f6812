"""The node agent: controllers, scheduler and one kubelet per node, in one reconcile loop.

It runs as a task on the API server's event loop (so it reads and writes the state
directly, with no locks) and wakes on every change or every `poll_s`. Test hooks
(evict, lose a node, OOM-kill) are synchronous methods called on that loop; `cluster.py`
calls them from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from tests.kube import controllers
from tests.kube.apiserver import KubeApiServer
from tests.kube.kubelet import Kubelet, KubeletConfig, PodWorker
from tests.kube.scheduler import NodeSpec
from tests.kube.store import NODES, PODS, ApiError, Obj

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(
        self, server: KubeApiServer, config: KubeletConfig, *, poll_s: float = 0.05
    ) -> None:
        self.server, self.store, self.config, self.poll_s = server, server.store, config, poll_s
        self.kubelets: dict[str, Kubelet] = {}
        self.errors: list[BaseException] = []
        self._node_count = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- nodes -----------------------------------------------------------------------

    def add_node(self, spec: NodeSpec) -> Obj:
        self._node_count += 1
        return self.store.create(NODES, None, spec.manifest(index=self._node_count))

    def lose_node(self, name: str) -> None:
        """The node vanishes (unplugged Pi, terminated VM): its processes die unreported,
        the Node object is removed, and pod GC fails and deletes its pods."""
        kubelet = self.kubelets.pop(name, None)
        if kubelet is not None:
            kubelet.kill_all()
            for worker in kubelet.workers.values():
                worker.clean_up()
        with contextlib.suppress(ApiError):
            self.store.delete(NODES, None, name)

    # --- pod hooks -------------------------------------------------------------------

    def _worker(self, pod_name: str) -> tuple[Kubelet, PodWorker]:
        for kubelet in self.kubelets.values():
            worker = kubelet.find(pod_name)
            if worker is not None and not worker.done:
                return kubelet, worker
        raise LookupError(f"pod {pod_name} is not running on any node")

    def evict(self, pod_name: str) -> None:
        kubelet, worker = self._worker(pod_name)
        kubelet.evict(worker)

    def oom_kill(self, pod_name: str, container: str | None = None) -> None:
        _, worker = self._worker(pod_name)
        names = [container] if container else list(worker.running)
        if not any(worker.oom_kill(name) for name in names):
            raise LookupError(f"pod {pod_name} has no running container {container or ''}")

    # --- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fake node agent")

    async def stop(self) -> None:
        # A flag, not Task.cancel(): Python 3.11's wait_for() can swallow a cancellation
        # that races with its timeout, and the loop would then run forever.
        self._stopping = True
        if self._task is not None:
            await self._task
        workers = [w for k in self.kubelets.values() for w in k.workers.values()]
        for worker in workers:
            worker.kill_now()
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for worker in workers:
            worker.clean_up()

    async def _run(self) -> None:
        while not self._stopping:
            changed = self.store.changed()
            try:
                self.reconcile()
            except Exception as exc:
                log.exception("the fake cluster's node agent failed")
                self.errors.append(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.poll_s)

    def reconcile(self) -> None:
        controllers.collect_garbage(self.store)
        controllers.sync_jobs(self.store)
        controllers.expire_finished_jobs(self.store)
        controllers.collect_orphaned_pods(self.store)
        controllers.schedule_pods(self.store)
        self._sync_kubelets()

    def _sync_kubelets(self) -> None:
        for node in self.store.list(NODES):
            name = node["metadata"]["name"]
            if name not in self.kubelets:
                index = int(node["spec"]["podCIDR"].split(".")[2])
                self.kubelets[name] = Kubelet(
                    node=name,
                    index=index,
                    store=self.store,
                    logs=self.server.logs,
                    config=self.config,
                )
        bound: dict[str, list[Obj]] = defaultdict(list)
        pods = self.store.list(PODS)
        for pod in pods:
            if pod["spec"].get("nodeName"):
                bound[pod["spec"]["nodeName"]].append(pod)
        self.server.logs.prune({(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods})
        for name, kubelet in self.kubelets.items():
            kubelet.sync(bound.get(name, []))
        for worker in [w for k in self.kubelets.values() for w in k.workers.values()]:
            if (
                worker.done
                and worker.task is not None
                and not worker.task.cancelled()
                and worker.task.exception() is not None
            ):
                exc = worker.task.exception()
                if exc not in self.errors:
                    self.errors.append(exc)
