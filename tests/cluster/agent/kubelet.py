"""The node agent's kubelet part: runs a bound pod's containers and reports like a kubelet.

What a Job runner reads is the pod status, so that is what this module is careful about:
phase Pending while init containers run (one after another), Running during the main
container, then Succeeded or Failed; `initContainerStatuses`/`containerStatuses` going
waiting(PodInitializing) -> running(startedAt) -> terminated(exitCode, reason
Completed|Error|OOMKilled|StartError, message from the termination-log file); with
restartPolicy Never a failed init container fails the pod and nothing after it runs;
the image manager's part (`_pull`): imagePullPolicy, imagePullSecrets read as the node,
ErrImagePull -> ImagePullBackOff with a doubling delay between real re-pulls,
ErrImageNeverPull, and the events kubelets emit. Each container runs in its image
(`images.py` pulls and unpacks, `launch.py` mounts and pivots): `command` replaces the
ENTRYPOINT, `args` the CMD, the image's Env under the container's, its WorkingDir unless
`workingDir` is set; `imageID` is the repository@digest that runs.

Status goes to the real API server through the `status` subresource (strategic merge, so
conditions others own, PodScheduled and DisruptionTarget, stay), and a pod marked for
deletion is stopped, reported and then deleted with grace 0, as the kubelet does.

Not reproduced: restarts (restartPolicy Always/OnFailure run once), probes, resource
limits (a hook stands in for the OOM killer), the image's USER (containers run as root),
pod networking (containers share the host's network; KUBERNETES_SERVICE_HOST points at the
API server on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.agent.events import EventRecorder
from tests.cluster.agent.images import (
    Image,
    ImageStore,
    PullError,
    credential_hashes,
    write_authfile,
)
from tests.cluster.agent.kubeapi import ApiError, KubeApi, Obj
from tests.cluster.agent.logs import ContainerLog, LogStore
from tests.cluster.agent.podstatus import Outcome, PodStatus, disruption
from tests.cluster.agent.runtime import Cgroups, ContainerProcess, Mount, expand
from tests.cluster.agent.volumes import (
    VolumeError,
    container_mounts,
    set_up,
)

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
    nfs_exports: dict[str, Path]
    base_env: dict[str, str]
    images: ImageStore  # this node's images (pulled, unpacked once, shared cache)
    oom_containers: set[str] = field(default_factory=set)  # container names to OOM-kill
    max_grace_s: float = 2.0  # termination grace periods are capped at this
    pull_backoff_s: float = 0.3  # ErrImagePull -> ImagePullBackOff
    # Between real re-pulls of an image that failed: the kubelet's 10 s doubling to 300 s,
    # scaled down for tests.
    image_backoff_s: float = 2.0
    image_backoff_max_s: float = 30.0
    retry_s: float = 0.2  # volume set-up and image pull retries
    cgroups: Cgroups = field(default_factory=Cgroups)


class PodWorker:
    """One pod on one node, from volume set-up to its terminal phase."""

    def __init__(
        self,
        *,
        pod: Obj,
        node: str,
        pod_ip: str,
        host_ip: str,
        api: KubeApi,
        events: EventRecorder,
        logs: LogStore,
        config: KubeletConfig,
    ) -> None:
        self.pod, self.node, self.api, self.logs, self.config = pod, node, api, logs, config
        self.events = events
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
        self._dirty = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self.deleted = False  # the final delete (grace 0) was sent
        self._in_flight = 0

    # --- control from the agent ----------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod {self.name}")
        self._publisher = asyncio.create_task(self._publish_loop(), name=f"status {self.name}")

    @property
    def reported(self) -> bool:
        """The terminal status reached the API server (or nothing will report any more)."""
        return self.silenced or (self.status.terminal and not self._dirty.is_set()
                                 and self._in_flight == 0)

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
        if self._publisher is not None:
            self._publisher.cancel()
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
                    v["name"]: await set_up(
                        v,
                        pod=self.pod,
                        pod_dir=self.dir,
                        api=self.api,
                        nfs_exports=self.config.nfs_exports,
                    )
                    for v in self.spec.get("volumes", [])
                }
            except (VolumeError, ApiError, OSError) as exc:
                name = str(exc)
                if name not in reported:
                    reported.add(name)
                    self.event("FailedMount", f"MountVolume.SetUp failed: {exc}", "Warning")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.config.retry_s)
        return None

    async def _pull(self, container: dict[str, Any], status: dict[str, Any]) -> Image | None:
        """The kubelet's image manager: the pull policy, the pull secrets, the events and
        the waiting reasons, with a back-off that doubles between real re-pulls."""
        image, store = container["image"], self.config.images
        policy = container.get("imagePullPolicy") or "IfNotPresent"
        delay = self.config.image_backoff_s
        while not self.stopping.is_set():
            auths = await self._pull_secrets()
            credentials = credential_hashes(image, auths)
            present = store.present(image, credentials=credentials)
            if present is not None and policy != "Always":
                self.event("Pulled", f'Container image "{image}" already present on machine '
                                     "and can be accessed by the pod")
                return present
            if policy == "Never":
                message = f'Container image "{image}" is not present with pull policy of Never'
                self.event("ErrImageNeverPull", message, "Warning")
                self.event("Failed", "Error: ErrImageNeverPull", "Warning")
                self._waiting(status, "ErrImageNeverPull", message)
                await self._sleep(delay)
                continue
            self.event("Pulling", f'Pulling image "{image}"')
            started = time.monotonic()
            authfile = (write_authfile(self.dir / "auth" / f"{secrets.token_hex(8)}.json", auths)
                        if credentials else None)
            try:
                result = await asyncio.to_thread(
                    store.pull, image, authfile=authfile,
                    credential=min(credentials) if credentials else None)
            except PullError as exc:
                error = str(exc)
                self.event("Failed", f'Failed to pull image "{image}": {error}', "Warning")
                self.event("Failed", "Error: ErrImagePull", "Warning")
                self._waiting(status, "ErrImagePull", error)
                await self._sleep(self.config.pull_backoff_s)
                if self.stopping.is_set():
                    break
                message = f'Back-off pulling image "{image}"'
                self.event("BackOff", message)
                self.event("Failed", "Error: ImagePullBackOff", "Warning")
                self._waiting(status, "ImagePullBackOff", f"{message}: ErrImagePull: {error}")
                await self._sleep(delay)
                delay = min(delay * 2, self.config.image_backoff_max_s)
                continue
            finally:
                if authfile is not None:
                    authfile.unlink(missing_ok=True)
            self.event("Pulled", f'Successfully pulled image "{image}" in '
                                 f"{go_duration(result.seconds)} ("
                                 f"{go_duration(time.monotonic() - started)} including "
                                 f"waiting). Image size: {result.image.size} bytes.")
            return result.image
        return None

    def _waiting(self, status: dict[str, Any], reason: str, message: str) -> None:
        status["state"] = {"waiting": {"reason": reason, "message": message}}
        self._publish()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _pull_secrets(self) -> dict[str, Any]:
        """The pod's imagePullSecrets, read as the node (the Node authorizer allows exactly
        those), merged as a docker config's "auths"; a pull gets them in a 0600 file."""
        auths: dict[str, Any] = {}
        missing = []
        for ref in self.spec.get("imagePullSecrets") or []:
            name = ref.get("name", "")
            try:
                secret = await self.api.get(
                    f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
            except (ApiError, OSError):
                secret = None
            data = (secret or {}).get("data") or {}
            try:
                if ".dockerconfigjson" in data:
                    config = json.loads(base64.b64decode(data[".dockerconfigjson"]))
                    auths.update(config.get("auths") or {})
                elif ".dockercfg" in data:
                    auths.update(json.loads(base64.b64decode(data[".dockercfg"])))
                else:
                    missing.append(name)
            except ValueError:
                missing.append(name)
        if missing:
            self.event("FailedToRetrieveImagePullSecret",
                       f"Unable to retrieve some image pull secrets ({', '.join(missing)}); "
                       "attempting to pull the image may not succeed.", "Warning")
        return auths

    async def _run_container(
        self,
        container: dict[str, Any],
        status: dict[str, Any],
        volumes: dict[str, tuple[Path, bool]],
        *,
        init: bool,
    ) -> int:
        image = None if self.stopping.is_set() else await self._pull(container, status)
        if image is None:
            return 137
        with contextlib.ExitStack() as held:
            await asyncio.to_thread(held.enter_context, self.config.images.in_use(image))
            return await self._start_and_wait(container, status, image, init=init,
                                              process=self._process(container, volumes, image))

    async def _start_and_wait(self, container: dict[str, Any], status: dict[str, Any],
                              image: Image, *, init: bool, process: ContainerProcess) -> int:
        name = container["name"]
        self.event("Created", f"Created container: {name}")
        await process.start()
        self.running[name] = process
        if not init:
            self.status.phase = "Running"
        status.update(
            started=True,
            ready=not init,
            imageID=image.image_id,
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
        self, container: dict[str, Any], volumes: dict[str, tuple[Path, bool]], image: Image
    ) -> ContainerProcess:
        """Kubernetes' rules over the image config: `command` replaces ENTRYPOINT, `args`
        replace CMD; the container's env over the image's; workingDir else WorkingDir."""
        name = container["name"]
        state = self.dir / "containers" / name
        shutil.rmtree(state, ignore_errors=True)  # a fresh writable layer
        state.mkdir(parents=True)
        termination_log = state / "termination-log"
        termination_log.write_bytes(b"")
        mounts = [*self._etc_mounts(), *container_mounts(container, volumes)]
        mounts.append(
            Mount(termination_log, container.get("terminationMessagePath", "/dev/termination-log"))
        )
        env = {"HOME": "/root", **image.config.environment(), **self.config.base_env,
               "HOSTNAME": self.name}
        defined: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var or "valueFrom" not in var:
                defined[var["name"]] = expand(var.get("value", ""), defined)
            elif "fieldRef" in var["valueFrom"]:
                defined[var["name"]] = self._field(var["valueFrom"]["fieldRef"]["fieldPath"])
        env.update(defined)
        command = [expand(arg, defined) for arg in container.get("command") or []]
        args = [expand(arg, defined) for arg in container.get("args") or []]
        if command:
            argv = [*command, *args]
        else:
            argv = [*image.config.entrypoint, *(args or image.config.cmd)]
        return ContainerProcess(
            argv=argv,
            env=env,
            mounts=mounts,
            workdir=container.get("workingDir") or image.config.working_dir or "/",
            hostname=self.name,
            log=self.logs.open(self.namespace, self.name, name),
            state_dir=state,
            cgroup=self.config.cgroups.create(self.uid, name),
            rootfs=image.rootfs,
            privileged=bool((container.get("securityContext") or {}).get("privileged")),
        )

    def _etc_mounts(self) -> list[Mount]:
        """/etc/hosts and /etc/hostname as the kubelet writes them for a pod on the host's
        network, and the host's /etc/resolv.conf (dnsPolicy of a host-network pod)."""
        hosts, hostname = self.dir / "etc-hosts", self.dir / "etc-hostname"
        if not hosts.exists():
            hosts.write_text(
                "# Kubernetes-managed hosts file (host network).\n"
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"{self.status.ips['podIP']}\t{self.name}\n")
            hostname.write_text(f"{self.name}\n")
        return [Mount(hosts, "/etc/hosts"), Mount(hostname, "/etc/hostname"),
                Mount(Path("/etc/resolv.conf"), "/etc/resolv.conf", read_only=True)]

    def _field(self, path: str) -> str:
        """The downward API's fields a Job's containers typically ask for."""
        meta = self.pod["metadata"]
        if path.startswith("metadata.labels['"):
            return (meta.get("labels") or {}).get(path[len("metadata.labels['"):-2], "")
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", ""),
            "status.podIP": self.status.ips["podIP"],
            "status.hostIP": self.status.ips["hostIP"],
        }.get(path, "")

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
            self._dirty.set()

    async def _publish_loop(self) -> None:
        """Send the newest status whenever it changed; one request at a time, so a slow
        answer never lets an older status overwrite a newer one."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.silenced:
                continue
            self._in_flight += 1
            try:
                await self.api.patch(path, {"status": self.status.body()}, strategic=True)
            except ApiError as exc:
                if exc.status == 404:
                    return
                logging.getLogger(__name__).warning("pod %s status: %s", self.name, exc)
                self._dirty.set()
                await asyncio.sleep(self.config.retry_s)
            except OSError as exc:
                logging.getLogger(__name__).warning("pod %s status: %s", self.name, exc)
                self._dirty.set()
                await asyncio.sleep(self.config.retry_s)
            finally:
                self._in_flight -= 1

    def event(self, reason: str, message: str, kind: str = "Normal") -> None:
        if not self.silenced:
            self.events.record(self.pod, reason=reason, message=message, type=kind)


class Kubelet:
    """All pods bound to one node."""

    def __init__(
        self,
        *,
        node: str,
        index: int,
        api: KubeApi,
        events: EventRecorder,
        logs: LogStore,
        config: KubeletConfig,
    ) -> None:
        self.node, self.index, self.api, self.logs, self.config = node, index, api, logs, config
        self.events = events
        self.workers: dict[str, PodWorker] = {}
        self._next_ip = 2
        self._deletes: set[asyncio.Task[None]] = set()

    def sync(self, pods: list[Obj]) -> None:
        """Level-triggered: start new pods, stop deleted ones, confirm finished deletions."""
        present = {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            uid, meta = pod["metadata"]["uid"], pod["metadata"]
            worker = self.workers.get(uid)
            if worker is not None:
                worker.pod = pod  # labels and annotations as they are now
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
                elif worker is None or (worker.reported and not worker.deleted):
                    if worker is not None:
                        worker.deleted = True
                    self._delete_now(pod)
        for uid in [u for u in self.workers if u not in present]:
            worker = self.workers.pop(uid)
            worker.kill_now()
            worker.clean_up()
            self.logs.discard(worker.namespace, worker.name)

    def _delete_now(self, pod: Obj) -> None:
        """Containers are gone and reported: remove the object (grace 0, this uid only)."""
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}

        async def delete() -> None:
            try:
                await self.api.delete(path, body)
            except (ApiError, OSError) as exc:
                logging.getLogger(__name__).warning("deleting pod %s: %s", meta["name"], exc)
                worker = self.workers.get(meta["uid"])
                if worker is not None:
                    worker.deleted = False  # the next sync tries again

        task = asyncio.create_task(delete())
        self._deletes.add(task)
        task.add_done_callback(self._deletes.discard)

    def _worker(self, pod: Obj) -> PodWorker:
        ip, self._next_ip = "127.0.0.1", self._next_ip + 1  # host network: no pod IPs
        return PodWorker(
            pod=pod,
            node=self.node,
            pod_ip=ip,
            host_ip="127.0.0.1",
            api=self.api,
            events=self.events,
            logs=self.logs,
            config=self.config,
        )

    def find(self, namespace: str, name: str) -> PodWorker | None:
        """The running pod of that name (a finished one has nothing left to act on)."""
        return next((w for w in self.workers.values()
                     if (w.namespace, w.name) == (namespace, name) and not w.done), None)

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


def go_duration(seconds: float) -> str:
    """A duration as Go prints a time.Duration truncated to milliseconds (1.234s, 56ms)."""
    millis = int(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text
