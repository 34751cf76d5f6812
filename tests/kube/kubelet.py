"""The fake kubelet: runs a bound pod's containers for real and reports like the kubelet.

What a Job runner reads is the pod status, so that is what this module is careful about:
phase Pending while init containers run (one after another), Running during the main
container, then Succeeded or Failed; `initContainerStatuses`/`containerStatuses` going
waiting(PodInitializing) -> running(startedAt) -> terminated(exitCode, reason
Completed|Error|OOMKilled|StartError, message from the termination-log file); with
restartPolicy Never a failed init container fails the pod and nothing after it runs;
unpullable images wait in ErrImagePull then ImagePullBackOff; the events kubelets emit.

Not reproduced: restarts (restartPolicy Always/OnFailure run once), probes, resource
limits (a hook stands in for the OOM killer), image contents (the host is every image).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kube import events
from tests.kube.logs import ContainerLog, LogStore
from tests.kube.podstatus import Outcome, PodStatus, disruption, image_id
from tests.kube.runtime import Cgroups, ContainerProcess, Mount, expand
from tests.kube.store import PODS, Obj, Store
from tests.kube.volumes import MountPoints, VolumeError, container_mounts, set_up, top_level

TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048
EVICTION_MESSAGE = (
    "The node was low on resource: memory. Threshold quantity: 100Mi, "
    "available: 51200Ki. Container {container} was using 1452144Ki, request "
    "is 0, has larger consumption of memory. "
)


@dataclass
class KubeletConfig:
    """Knobs shared by every node's kubelet (tests mutate the sets while running)."""

    state_dir: Path
    shared_claims: dict[str, Path]
    base_env: dict[str, str]
    unpullable_images: set[str] = field(default_factory=set)
    oom_containers: set[str] = field(default_factory=set)  # container names to OOM-kill
    max_grace_s: float = 2.0  # termination grace periods are capped at this
    pull_backoff_s: float = 0.3  # ErrImagePull -> ImagePullBackOff
    retry_s: float = 0.2  # volume set-up and image pull retries
    cgroups: Cgroups = field(default_factory=Cgroups)
    mountpoints: MountPoints = field(default_factory=MountPoints)


class PodWorker:
    """One pod on one node, from volume set-up to its terminal phase."""

    def __init__(
        self,
        *,
        pod: Obj,
        node: str,
        pod_ip: str,
        host_ip: str,
        store: Store,
        logs: LogStore,
        config: KubeletConfig,
    ) -> None:
        self.pod, self.node, self.store, self.logs, self.config = pod, node, store, logs, config
        meta, self.spec = pod["metadata"], pod["spec"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = config.state_dir / node / "pods" / self.uid
        ips = {
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
        }
        self.status = PodStatus(spec=self.spec, ips=ips)
        self.running: dict[str, ContainerProcess] = {}
        self.stopping: asyncio.Event = asyncio.Event()
        self.silenced = False  # the node is gone: nothing reports any more
        self.task: asyncio.Task[None] | None = None
        self._stoppers: set[asyncio.Task[None]] = set()

    # --- control from the agent ----------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod {self.name}")

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def terminate(self, grace_s: float, outcome: Outcome | None = None) -> None:
        """Deletion, eviction or deadline: stop the containers, report, stop."""
        if self.stopping.is_set():
            return
        self.status.outcome = outcome or self.status.outcome
        self.stopping.set()
        grace = min(grace_s, self.config.max_grace_s)
        for name, process in list(self.running.items()):
            self.event("Killing", f"Stopping container {name}")
            self._stop_soon(process, grace)

    def _stop_soon(self, process: ContainerProcess, grace_s: float) -> None:
        task = asyncio.create_task(process.stop(grace_s))
        self._stoppers.add(task)
        task.add_done_callback(self._stoppers.discard)

    def oom_kill(self, container: str) -> bool:
        process = self.running.get(container)
        if process is None:
            return False
        process.killed_by = "OOMKilled"
        process.kill_all()
        return True

    def kill_now(self) -> None:
        """The node vanished: processes die, nobody reports it."""
        self.silenced = True
        self.stopping.set()
        for process in self.running.values():
            process.kill_all()

    def clean_up(self) -> None:
        for process in self.running.values():
            process.kill_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the pod's life ----------------------------------------------------------------

    async def _run(self) -> None:
        deadline = self.spec.get("activeDeadlineSeconds")
        if deadline is not None:
            asyncio.get_running_loop().call_later(float(deadline), self._deadline_exceeded)
        try:
            volumes = await self._set_up_volumes()
            if volumes is None:
                return
            self.status.sandbox_ready = True
            self._publish()
            inits = self.spec.get("initContainers", [])
            for index, container in enumerate(inits):
                code = await self._run_container(
                    container, self.status.init[index], volumes, init=True
                )
                if code != 0:
                    return self._finish("Failed")
            codes = await asyncio.gather(
                *[
                    self._run_container(c, self.status.main[i], volumes, init=False)
                    for i, c in enumerate(self.spec["containers"])
                ]
            )
            self._finish("Succeeded" if all(code == 0 for code in codes) else "Failed")
        except Exception:
            logging.getLogger(__name__).exception("pod %s: the fake kubelet failed", self.name)
            raise
        finally:
            if not self.silenced and not self.status.terminal:
                self._finish("Failed")

    def _deadline_exceeded(self) -> None:
        if self.status.terminal or self.stopping.is_set():
            return
        message = "Pod was active on the node longer than the specified deadline"
        self.event("DeadlineExceeded", message, "Normal")
        self.terminate(0, Outcome("DeadlineExceeded", message))

    async def _set_up_volumes(self) -> dict[str, tuple[Path, bool]] | None:
        reported: set[str] = set()
        while not self.stopping.is_set():
            try:
                return {
                    v["name"]: set_up(
                        v,
                        pod_dir=self.dir,
                        namespace=self.namespace,
                        store=self.store,
                        claims=self.config.shared_claims,
                    )
                    for v in self.spec.get("volumes", [])
                }
            except (VolumeError, OSError) as exc:
                name = str(exc)
                if name not in reported:
                    reported.add(name)
                    self.event("FailedMount", f"MountVolume.SetUp failed: {exc}", "Warning")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.retry_s)
        return None

    async def _pull(self, container: dict[str, Any], status: dict[str, Any]) -> bool:
        image = container["image"]
        if image not in self.config.unpullable_images:
            if container.get("imagePullPolicy") == "Always":
                self.event("Pulling", f'Pulling image "{image}"')
                self.event(
                    "Pulled",
                    f'Successfully pulled image "{image}" in 0s '
                    "(0s including waiting). Image size: 0 bytes.",
                )
            else:
                self.event("Pulled", f'Container image "{image}" already present on machine')
            return True
        error = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": {image}: not found'
        )
        self.event("Pulling", f'Pulling image "{image}"')
        self.event("Failed", f'Failed to pull image "{image}": {error}', "Warning")
        self.event("Failed", "Error: ErrImagePull", "Warning")
        status["state"] = {"waiting": {"reason": "ErrImagePull", "message": error}}
        self._publish()
        backoff = False
        while image in self.config.unpullable_images and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.pull_backoff_s)
            if not backoff and not self.stopping.is_set():
                backoff = True
                self.event("BackOff", f'Back-off pulling image "{image}"')
                self.event("Failed", "Error: ImagePullBackOff", "Warning")
                status["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                }
                self._publish()
        return not self.stopping.is_set()

    async def _run_container(
        self,
        container: dict[str, Any],
        status: dict[str, Any],
        volumes: dict[str, tuple[Path, bool]],
        *,
        init: bool,
    ) -> int:
        name = container["name"]
        if self.stopping.is_set() or not await self._pull(container, status):
            return 137
        process = self._process(container, volumes)
        self.event("Created", f"Created container: {name}")
        await process.start()
        self.running[name] = process
        if not init:
            self.status.phase = "Running"
        status.update(
            started=True,
            ready=not init,
            imageID=image_id(container["image"]),
            containerID=f"containerd://{secrets.token_hex(32)}",
            state={"running": {"startedAt": process.started_at}},
        )
        self.event("Started", f"Started container {name}")
        self._publish()
        if name in self.config.oom_containers:
            asyncio.get_running_loop().call_later(0.2, self.oom_kill, name)
        if self.stopping.is_set():  # deleted while starting
            self._stop_soon(process, 0)
        code = await process.wait()
        self.running.pop(name, None)
        terminated = {
            "exitCode": code,
            "startedAt": process.started_at,
            "finishedAt": process.finished_at,
            "containerID": status["containerID"],
            "reason": process.killed_by or ("Completed" if code == 0 else "Error"),
        }
        start_error = process.start_error_message()
        if start_error and code == 128:
            terminated.update(reason="StartError", message=start_error)
            self.event("Failed", f"Error: {start_error}", "Warning")
        elif message := self._termination_message(container, process.log, code):
            terminated["message"] = message
        status.update(state={"terminated": terminated}, ready=init and code == 0, started=False)
        self._publish()
        return code

    def _process(
        self, container: dict[str, Any], volumes: dict[str, tuple[Path, bool]]
    ) -> ContainerProcess:
        name = container["name"]
        state = self.dir / "containers" / name
        state.mkdir(parents=True, exist_ok=True)
        termination_log = state / "termination-log"
        termination_log.write_bytes(b"")
        mounts = container_mounts(container, volumes)
        mounts.append(
            Mount(termination_log, container.get("terminationMessagePath", "/dev/termination-log"))
        )
        for mount in top_level(mounts):
            self.config.mountpoints.ensure(Path(mount.target), is_file=mount.source.is_file())
        env = {**self.config.base_env, "HOSTNAME": self.name}
        defined: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var or "valueFrom" not in var:
                defined[var["name"]] = expand(var.get("value", ""), defined)
        env.update(defined)
        argv = [
            expand(arg, defined)
            for arg in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        return ContainerProcess(
            argv=argv,
            env=env,
            mounts=mounts,
            workdir=container.get("workingDir") or "/",
            hostname=self.name,
            log=self.logs.open(self.namespace, self.name, name),
            state_dir=state,
            cgroup=self.config.cgroups.create(self.uid, name),
        )

    def _termination_message(self, container: dict[str, Any], log: ContainerLog, code: int) -> str:
        """The file at terminationMessagePath, or the log tail (FallbackToLogsOnError)."""
        path = self.dir / "containers" / container["name"] / "termination-log"
        with contextlib.suppress(OSError):
            message = path.read_bytes()[:TERMINATION_MESSAGE_MAX].decode(errors="replace")
            if message:
                return message
        if container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and code != 0:
            tail = b"".join(line.data for line in log.lines[-FALLBACK_LOG_LINES:])
            return tail[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return ""

    def _finish(self, phase: str) -> None:
        if self.status.terminal:
            return
        self.status.phase = "Failed" if self.status.outcome is not None else phase
        self.status.sandbox_ready = False
        self._publish()

    def _publish(self) -> None:
        if not self.silenced:
            self.store.mutate(PODS, self.namespace, self.name, self.status.write)

    def event(self, reason: str, message: str, kind: str = "Normal") -> None:
        if self.silenced:
            return
        pod = self.store.get(PODS, self.namespace, self.name)
        if pod is not None:
            events.record(
                self.store,
                pod,
                reason=reason,
                message=message,
                type=kind,
                component="kubelet",
                host=self.node,
            )


class Kubelet:
    """All pods bound to one node."""

    def __init__(
        self, *, node: str, index: int, store: Store, logs: LogStore, config: KubeletConfig
    ) -> None:
        self.node, self.index, self.store, self.logs, self.config = node, index, store, logs, config
        self.workers: dict[str, PodWorker] = {}
        self._next_ip = 2

    def sync(self, pods: list[Obj]) -> None:
        """Level-triggered: start new pods, stop deleted ones, confirm finished deletions."""
        present = {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            uid, meta = pod["metadata"]["uid"], pod["metadata"]
            worker = self.workers.get(uid)
            deleting = bool(meta.get("deletionTimestamp"))
            if (
                worker is None
                and not deleting
                and pod["status"].get("phase") not in ("Succeeded", "Failed")
            ):
                worker = self.workers[uid] = self._worker(pod)
                worker.start()
            if deleting:
                if worker is not None and not worker.done:
                    worker.terminate(float(meta.get("deletionGracePeriodSeconds") or 0))
                elif meta.get("deletionGracePeriodSeconds", 0) != 0:
                    self.store.delete(PODS, meta["namespace"], meta["name"], grace_s=0)
        for uid in [u for u in self.workers if u not in present]:
            worker = self.workers.pop(uid)
            worker.kill_now()
            worker.clean_up()
            self.logs.discard(worker.namespace, worker.name)

    def _worker(self, pod: Obj) -> PodWorker:
        ip, self._next_ip = f"10.244.{self.index}.{self._next_ip}", self._next_ip + 1
        return PodWorker(
            pod=pod,
            node=self.node,
            pod_ip=ip,
            host_ip=f"10.0.0.{10 + self.index}",
            store=self.store,
            logs=self.logs,
            config=self.config,
        )

    def find(self, name: str) -> PodWorker | None:
        return next((w for w in self.workers.values() if w.name == name), None)

    def evict(self, worker: PodWorker) -> None:
        container = worker.spec["containers"][0]["name"]
        message = EVICTION_MESSAGE.format(container=container)
        worker.event("Evicted", message, "Warning")
        worker.terminate(
            0, Outcome("Evicted", message, disruption("TerminationByKubelet", message))
        )

    def kill_all(self) -> None:
        """The node is gone (or the cluster stops): every process dies, nothing reports."""
        for worker in self.workers.values():
            worker.kill_now()
