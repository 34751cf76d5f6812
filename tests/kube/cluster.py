"""The test cluster as tests use it: a kubeconfig, state to assert on, and failure hooks.

No Kubernetes control plane runs on this machine, so tests of the Kubernetes runner get
this instead: the kmock-based API server (`apiserver.py`) over real HTTP on 127.0.0.1 and
the node agent (`agent.py`) running pods' containers as real processes, both on one
event loop in a background thread. The runner under test talks to it through the
official client and a kubeconfig, exactly as it would to a cluster.

    with start_fake_cluster(tmp_path, nodes=[NodeSpec("node-amd64")]) as cluster:
        run_the_runner(kubeconfig=cluster.kubeconfig)
        assert cluster.created_jobs()[0]["spec"]["backoffLimit"] == 0
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.test_utils
import kmock

from tests.kube.agent import NodeAgent
from tests.kube.apiserver import KubeApiServer
from tests.kube.kubelet import KubeletConfig
from tests.kube.scheduler import NodeSpec, Taint
from tests.kube.store import CLAIMS, EVENTS, JOBS, NAMESPACES, NODES, PODS, SECRETS, Obj

__all__ = ["DEFAULT_NODES", "FakeCluster", "NodeSpec", "Taint", "start_fake_cluster"]

T = TypeVar("T")
DEFAULT_NODES = (NodeSpec("node-amd64", arch="amd64"), NodeSpec("node-arm64", arch="arm64"))
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CALL_TIMEOUT_S = 30


class FakeCluster:
    """A running fake cluster; use `start_fake_cluster` to get one."""

    def __init__(
        self,
        state_dir: Path,
        *,
        nodes: Sequence[NodeSpec],
        namespace: str,
        shared_claims: Mapping[str, Path],
        container_env: Mapping[str, str],
        poll_s: float,
        max_grace_s: float,
    ) -> None:
        self.state_dir, self.namespace = state_dir, namespace
        self.kubeconfig = state_dir / "kubeconfig"
        self.api_url = ""
        self._nodes = list(nodes)
        self._poll_s = poll_s
        self.config = KubeletConfig(
            state_dir=state_dir / "kubelet",
            shared_claims={name: Path(path) for name, path in shared_claims.items()},
            base_env={
                "PATH": f"{Path(sys.executable).parent}:{DEFAULT_PATH}",
                "HOME": "/root",
                **container_env,
            },
            max_grace_s=max_grace_s,
        )
        self.server = KubeApiServer()
        self.agent: NodeAgent | None = None
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._ready = concurrent.futures.Future[None]()
        self._thread = threading.Thread(target=self._main, name="fake-kube", daemon=True)

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self._ready.result(timeout=CALL_TIMEOUT_S)
        return self

    def stop(self) -> None:
        """Kill every pod process, stop the server; idempotent."""
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=60)
            if self._thread.is_alive():
                raise RuntimeError("the fake cluster did not stop within 60 s")
        self.config.cgroups.remove_all()
        self.config.mountpoints.remove_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaces start-up failures in start()
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.server:
            http = aiohttp.test_utils.RawTestServer(self.server, host="127.0.0.1", port=None)
            await http.start_server()
            try:
                self.api_url = f"http://127.0.0.1:{http.port}"
                self._write_kubeconfig()
                self._seed()
                self.agent = NodeAgent(self.server, self.config, poll_s=self._poll_s)
                for spec in self._nodes:
                    self.agent.add_node(spec)
                self.agent.start()
                self._ready.set_result(None)
                await self._stopping.wait()
            finally:
                if self.agent is not None:
                    await self.agent.stop()
                self.server.end_streams()
                await http.close()

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.api_url}}],
                    "users": [{"name": "fake", "user": {}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "fake",
                                "namespace": self.namespace,
                            },
                        }
                    ],
                },
                indent=2,
            )
        )

    def _seed(self) -> None:
        store = self.server.store
        for name in dict.fromkeys(["default", self.namespace]):
            store.create(
                NAMESPACES, None, {"metadata": {"name": name}, "status": {"phase": "Active"}}
            )
        for claim in self.config.shared_claims:
            store.create(
                CLAIMS,
                self.namespace,
                {
                    "metadata": {"name": claim},
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": "nfs",
                        "resources": {"requests": {"storage": "10Gi"}},
                    },
                    "status": {
                        "phase": "Bound",
                        "accessModes": ["ReadWriteMany"],
                        "capacity": {"storage": "10Gi"},
                    },
                },
            )

    # --- calling into the cluster's thread -------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the cluster's event loop (where all state lives) and return its
        result; the only safe way to touch the store or the agent from a test."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(CALL_TIMEOUT_S)

    def _agent(self) -> NodeAgent:
        assert self.agent is not None, "the cluster is not started"
        return self.agent

    # --- state -----------------------------------------------------------------------

    def created_jobs(self) -> list[dict[str, Any]]:
        """Each Job body exactly as the client POSTed it (kmock records every request)."""
        return self.call(
            lambda: [
                json.loads(request.body)
                for request in list(self.server)
                if request.action == kmock.action.CREATE and request.resource == JOBS.resource
            ]
        )

    def jobs(self) -> list[Obj]:
        return self.call(lambda: self.server.store.list(JOBS, self.namespace))

    def pods(self) -> list[Obj]:
        return self.call(lambda: self.server.store.list(PODS, self.namespace))

    def nodes(self) -> list[Obj]:
        return self.call(lambda: self.server.store.list(NODES))

    def events(self, *, involved: str | None = None) -> list[Obj]:
        def matching() -> list[Obj]:
            found = self.server.store.list(EVENTS, self.namespace)
            return [e for e in found if involved in (None, e["involvedObject"]["name"])]

        return self.call(matching)

    def pod_log(self, pod: str, container: str) -> str:
        def text() -> str:
            log = self.server.logs.get(self.namespace, pod, container)
            return log.text() if log is not None else ""

        return self.call(text)

    def create_secret(
        self, name: str, *, type: str = "Opaque", data: Mapping[str, str | bytes]
    ) -> Obj:
        encoded = {
            key: base64.b64encode(value.encode() if isinstance(value, str) else value).decode()
            for key, value in data.items()
        }
        return self.call(
            lambda: self.server.store.create(
                SECRETS, self.namespace, {"metadata": {"name": name}, "type": type, "data": encoded}
            )
        )

    def wait_for(
        self, condition: Callable[[], T], *, timeout: float = 30, what: str = "condition"
    ) -> T:
        """Poll `condition` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(self._poll_s)

    # --- failure hooks ------------------------------------------------------------------

    @property
    def unpullable_images(self) -> set[str]:
        """Images whose pull fails (ErrImagePull, then ImagePullBackOff); mutable."""
        return self.config.unpullable_images

    @property
    def oom_containers(self) -> set[str]:
        """Container names OOM-killed (exit 137, OOMKilled) right after they start."""
        return self.config.oom_containers

    @property
    def agent_errors(self) -> list[BaseException]:
        return list(self._agent().errors)

    def add_node(self, spec: NodeSpec) -> Obj:
        return self.call(lambda: self._agent().add_node(spec))

    def lose_node(self, name: str) -> None:
        self.call(lambda: self._agent().lose_node(name))

    def evict(self, pod_name: str) -> None:
        self.call(lambda: self._agent().evict(pod_name))

    def oom_kill(self, pod_name: str, container: str | None = None) -> None:
        self.call(lambda: self._agent().oom_kill(pod_name, container))

    def drop_log_stream_once(self, *, after_lines: int) -> None:
        """The next follow stream that has sent `after_lines` lines loses its connection."""
        self.call(lambda: self.server.logs.drop_once(after_lines))

    @property
    def dropped_log_streams(self) -> int:
        """How many follow streams the drop hook has cut."""
        return self.call(lambda: self.server.logs.dropped)


def start_fake_cluster(
    tmp_path: Path,
    *,
    nodes: Iterable[NodeSpec] = DEFAULT_NODES,
    namespace: str = "multiarch",
    shared_claims: Mapping[str, Path | str] | None = None,
    container_env: Mapping[str, str] | None = None,
    poll_s: float = 0.05,
    max_grace_s: float = 2.0,
) -> FakeCluster:
    """Start a cluster whose state lives under `tmp_path` (a context manager, or `.stop()`).

    nodes: the nodes, by default one amd64 and one arm64 (both run on this machine).
    shared_claims: PVC name -> host directory, shared by every pod that mounts the claim;
      default `{"multiarch-shared": tmp_path / "nfs"}`.
    container_env: added to every container's environment (below its own `env`).
    max_grace_s: termination grace periods are capped at this (tests stay fast).
    """
    if os.geteuid() != 0:
        raise PermissionError("the fake cluster runs containers in mount namespaces: be root")
    claims = {
        k: Path(v) for k, v in (shared_claims or {"multiarch-shared": tmp_path / "nfs"}).items()
    }
    cluster = FakeCluster(
        tmp_path / "fake-cluster",
        nodes=list(nodes),
        namespace=namespace,
        shared_claims=claims,
        container_env=dict(container_env or {}),
        poll_s=poll_s,
        max_grace_s=max_grace_s,
    )
    return cluster.start()
