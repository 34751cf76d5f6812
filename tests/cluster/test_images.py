"""The node agents run every container inside its image, as a kubelet with containerd does.

Checked against the real control plane with images from the session's registry: a pod
sees its image's files (not the host's) for its node's architecture, its volumes, the
image's ENTRYPOINT/CMD/Env/WorkingDir under Kubernetes' rules; pulls honour the pull
policy and imagePullSecrets and fail with the kubelet's states and events; the cache
unpacks a digest once; no mount is ever left on the host.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from kubernetes.client.rest import ApiException

from devtools import supervisor
from devtools.registry import free_port
from tests.cluster.agent.images import DEFAULT_CACHE, ImageStore
from tests.cluster.controlplane import NodeSpec
from tests.cluster.handle import REPO_ROOT, Cluster
from tests.sessions import Playground

pytestmark = pytest.mark.integration
Obj = dict[str, Any]


def pod_body(name: str, image: str, *, arch: str = "amd64", command: list[str] | None = None,
             args: list[str] | None = None, **extra: Any) -> Obj:
    container: Obj = {"name": "main", "image": image}
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    container.update(extra.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/arch": arch},
                     "containers": [container], **extra}}


@pytest.fixture
def pods(kube_cluster: Cluster) -> Iterator[list[str]]:
    """Names of pods a test created; deleted (grace 0) afterwards."""
    created: list[str] = []
    yield created
    for name in created:
        with contextlib.suppress(ApiException):  # already gone
            kube_cluster.core.delete_namespaced_pod(name, kube_cluster.namespace,
                                                    grace_period_seconds=0)


def run(cluster: Cluster, pods: list[str], body: Obj) -> Obj:
    pods.append(body["metadata"]["name"])
    cluster.core.create_namespaced_pod(cluster.namespace, body)
    return wait_phase(cluster, body["metadata"]["name"], {"Succeeded", "Failed"})


def wait_phase(cluster: Cluster, name: str, phases: set[str], timeout: float = 90) -> Obj:
    return cluster.wait_for(
        lambda: next((p for p in cluster.pods() if p["metadata"]["name"] == name
                      and p["status"].get("phase") in phases), None),
        timeout=timeout, what=f"pod {name} to be {'/'.join(sorted(phases))}")


def messages(cluster: Cluster, pod: str) -> list[tuple[str, str, int]]:
    return [(e["reason"], e["message"], e.get("count") or 1)
            for e in cluster.events(involved=pod)]


def platform_digest(reference: str, arch: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{reference}"], capture_output=True, check=True).stdout
    return next(m["digest"] for m in json.loads(raw)["manifests"]
                if m["platform"]["architecture"] == arch)


def waiting(pod: Obj) -> Obj:
    statuses = pod["status"].get("containerStatuses") or [{"state": {}}]
    return statuses[0]["state"].get("waiting") or {}


def test_a_pod_runs_in_its_image_for_its_nodes_architecture_with_its_volumes(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    kube_cluster.create_secret("image-test-secret", data={"token": "s3cret"})
    try:
        script = ("uname -m; test -e /usr/bin/python3 && echo host-python || echo no-python; "
                  "cat /etc/creds/token; echo; echo scratch > /scratch/f && cat /scratch/f; "
                  "hostname; grep -c localhost /etc/hosts; test -s /etc/resolv.conf && echo dns; "
                  "touch /etc/creds/x 2>/dev/null || echo secret-read-only; ls /dev | tr '\\n' ' '")
        for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
            name = f"in-image-{arch}"
            done = run(kube_cluster, pods, pod_body(
                name, playground.base, arch=arch, command=["sh", "-c", script],
                container={"volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "creds", "mountPath": "/etc/creds"}]},
                volumes=[{"name": "scratch", "emptyDir": {}},
                         {"name": "creds", "secret": {"secretName": "image-test-secret"}}]))
            assert done["status"]["phase"] == "Succeeded", done["status"]
            lines = kube_cluster.pod_log(name, "main").splitlines()
            assert lines[:8] == [machine, "no-python", "s3cret", "scratch", name, "2", "dns",
                                 "secret-read-only"]
            devices = set(lines[8].split())
            assert {"null", "zero", "full", "random", "urandom", "tty"} <= devices
            assert "fuse" not in devices and "sda" not in devices and "vda" not in devices
            status = done["status"]["containerStatuses"][0]
            repository = playground.base.rsplit(":", 1)[0]
            assert status["imageID"] == \
                f"{repository}@{platform_digest(playground.base, arch)}"
            events = messages(kube_cluster, name)
            assert ("Pulling", f'Pulling image "{playground.base}"', 1) in events
            pulled = next(m for r, m, _ in events if r == "Pulled")
            assert pulled.startswith(f'Successfully pulled image "{playground.base}" in ')
            assert "including waiting). Image size: " in pulled
            assert int(pulled.rsplit("Image size: ", 1)[1].split()[0]) > 500_000
    finally:
        kube_cluster.delete_secret("image-test-secret")


def test_a_privileged_container_gets_the_hosts_devices_and_sys_stays_read_only(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    script = ("test -c /dev/fuse && echo fuse; test -b /dev/vda -o -b /dev/sda && echo disk; "
              "touch /sys/x 2>/dev/null || echo sys-read-only")
    done = run(kube_cluster, pods, pod_body(
        "privileged", playground.base, command=["sh", "-c", script],
        container={"securityContext": {"privileged": True}}))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert kube_cluster.pod_log("privileged", "main").split() == ["fuse", "disk",
                                                                   "sys-read-only"]


def test_debian_runs_as_itself_on_both_architectures(
    kube_cluster: Cluster, debian_base: str, pods: list[str],
) -> None:
    """Debian 12 for amd64 and arm64 (the base of `make builder`, tests/sessions.py): a
    realistic image, about 60 MB compressed per platform."""
    script = (". /etc/os-release; echo $ID $VERSION_ID; dpkg --print-architecture; "
              "test -e /usr/bin/python3 && echo host-python || echo no-python")
    for arch in ("amd64", "arm64"):
        name = f"debian-{arch}"
        done = run(kube_cluster, pods, pod_body(name, debian_base, arch=arch,
                                                command=["sh", "-c", script]))
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert kube_cluster.pod_log(name, "main").split("\n")[:3] == [
            "debian 12", arch, "no-python"]


@pytest.fixture(scope="module")
def entrypoint_image(playground: Playground, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox with ENTRYPOINT ["sh", "-c"], CMD ["echo from-cmd $GREETING $PWD"],
    Env GREETING=image and WorkingDir /srv (single-platform, amd64)."""
    layout = tmp_path_factory.mktemp("entrypoint") / "layout"
    reference = f"{playground.address}/tests/entrypoint:1"
    steps = [
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--override-arch", "amd64",
         f"docker://{playground.base}", f"oci:{layout}:base"],
        ["umoci", "config", "--image", f"{layout}:base", "--tag", "ep",
         "--config.entrypoint", "sh", "--config.entrypoint", "-c",
         "--config.cmd", "echo from-cmd $GREETING $PWD",
         "--config.env", "GREETING=image", "--config.workingdir", "/srv"],
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:ep",
         f"docker://{reference}"],
    ]
    for argv in steps:
        subprocess.run(argv, check=True, capture_output=True)
    return reference


@pytest.mark.parametrize(("command", "args", "env", "expected"), [
    (None, None, [], "from-cmd image /srv"),
    (None, ["echo from-args $GREETING $PWD $PATH"], [],
     "from-args image /srv /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    (["echo", "command-only"], None, [], "command-only"),
    (["sh", "-c"], ["echo $GREETING $PWD"], [{"name": "GREETING", "value": "container"}],
     "container /srv"),
], ids=["entrypoint+cmd", "args-replace-cmd", "command-drops-cmd", "container-env-wins"])
def test_command_and_args_replace_the_images_entrypoint_and_cmd(
    kube_cluster: Cluster, entrypoint_image: str, pods: list[str], command: list[str] | None,
    args: list[str] | None, env: list[Obj], expected: str,
) -> None:
    done = run(kube_cluster, pods, pod_body("entrypoint", entrypoint_image, command=command,
                                            args=args, container={"env": env}))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert kube_cluster.pod_log("entrypoint", "main").strip() == expected


def test_writes_go_to_the_containers_own_layer_removed_with_the_pod_and_host_tools_are_absent(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    done = run(kube_cluster, pods, pod_body("layer", playground.base,
                                            command=["sh", "-c", "echo x > /marker"]))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    uid = done["metadata"]["uid"]
    pod_dir = Path(kube_cluster.state.state_dir) / "nodes" / "node-amd64" / "node-amd64" / \
        "pods" / uid
    assert (pod_dir / "containers" / "main" / "upper" / "marker").read_text() == "x\n"
    digest = done["status"]["containerStatuses"][0]["imageID"].rsplit("@", 1)[1]
    rootfs = DEFAULT_CACHE / digest.replace(":", "-") / "rootfs"
    assert not (rootfs / "marker").exists(), "the container wrote into the cached image"
    kube_cluster.core.delete_namespaced_pod("layer", kube_cluster.namespace)
    kube_cluster.wait_for(lambda: not pod_dir.exists(), what="the pod's writable layer to go")
    assert (rootfs / "bin" / "busybox").exists()
    start = run(kube_cluster, pods, pod_body("no-host-python", playground.base,
                                             command=["python3", "-c", "pass"]))
    terminated = start["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("StartError", 128)
    assert 'exec: "python3": executable file not found in $PATH' in terminated["message"]


def test_a_second_pod_finds_the_image_present_and_nothing_is_unpacked_again(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    first = run(kube_cluster, pods, pod_body("present-1", playground.base,
                                             command=["true"]))
    digest = first["status"]["containerStatuses"][0]["imageID"].rsplit("@", 1)[1]
    busybox = DEFAULT_CACHE / digest.replace(":", "-") / "rootfs" / "bin" / "busybox"
    inode = busybox.stat().st_ino
    second = run(kube_cluster, pods, pod_body(
        "present-2", playground.base, command=["true"],
        container={"imagePullPolicy": "IfNotPresent"}))
    assert second["status"]["phase"] == "Succeeded"
    assert second["status"]["containerStatuses"][0]["imageID"] == \
        first["status"]["containerStatuses"][0]["imageID"]
    assert [(r, m) for r, m, _ in messages(kube_cluster, "present-2") if r.startswith("Pull")] \
        == [("Pulled", f'Container image "{playground.base}" already present on machine '
                       "and can be accessed by the pod")]
    assert busybox.stat().st_ino == inode, "the cached digest was unpacked again"


def test_pulling_an_image_a_running_container_uses_does_not_wait_for_it(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    """imagePullPolicy Always re-pulls while another pod runs on the same digest (as a
    flow-run pod runs while its build pods pull the builder image): the pull must not wait
    for that container to end."""
    pods.append("holder")
    kube_cluster.core.create_namespaced_pod(kube_cluster.namespace, pod_body(
        "holder", playground.base, command=["sleep", "299"],
        container={"imagePullPolicy": "Always"}))
    wait_phase(kube_cluster, "holder", {"Running"})
    second = run(kube_cluster, pods, pod_body(
        "puller", playground.base, command=["true"], container={"imagePullPolicy": "Always"}))
    assert second["status"]["phase"] == "Succeeded"
    assert sorted(r for r, _, _ in messages(kube_cluster, "puller") if r.startswith("Pull")) \
        == ["Pulled", "Pulling"]  # events of one second have no order


def test_a_missing_tag_waits_in_err_image_pull_then_back_off_and_is_retried(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    image = f"{playground.address}/library/busybox:no-such-tag"
    pods.append("missing-tag")
    kube_cluster.core.create_namespaced_pod(kube_cluster.namespace,
                                            pod_body("missing-tag", image, command=["true"]))
    err = kube_cluster.wait_for(
        lambda: next((p for p in kube_cluster.pods() if p["metadata"]["name"] == "missing-tag"
                      and waiting(p).get("reason") == "ErrImagePull"), None),
        what="ErrImagePull")
    expected = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                f'failed to resolve reference "{image}": {image}: not found')
    assert waiting(err)["message"] == expected
    back_off = kube_cluster.wait_for(
        lambda: next((p for p in kube_cluster.pods() if p["metadata"]["name"] == "missing-tag"
                      and waiting(p).get("reason") == "ImagePullBackOff"), None),
        what="ImagePullBackOff")
    assert back_off["status"]["phase"] == "Pending"
    assert waiting(back_off)["message"].startswith(f'Back-off pulling image "{image}"')
    kube_cluster.wait_for(
        lambda: dict((r, c) for r, m, c in messages(kube_cluster, "missing-tag")
                     if r == "Pulling").get("Pulling", 0) >= 2,
        timeout=20, what="a second real pull after the back-off")
    events = {(r, m) for r, m, _ in messages(kube_cluster, "missing-tag")}
    assert {("Pulling", f'Pulling image "{image}"'),
            ("Failed", f'Failed to pull image "{image}": {expected}'),
            ("Failed", "Error: ErrImagePull"), ("BackOff", f'Back-off pulling image "{image}"'),
            ("Failed", "Error: ImagePullBackOff")} <= events
    pod = kube_cluster.core.read_namespaced_pod("missing-tag", kube_cluster.namespace)
    assert pod.status.phase == "Pending"


def test_pull_policy_never_with_an_absent_image_is_err_image_never_pull(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    image = f"{playground.address}/tests/never-pulled:1"
    pods.append("never")
    kube_cluster.core.create_namespaced_pod(kube_cluster.namespace, pod_body(
        "never", image, command=["true"], container={"imagePullPolicy": "Never"}))
    pod = kube_cluster.wait_for(
        lambda: next((p for p in kube_cluster.pods() if p["metadata"]["name"] == "never"
                      and waiting(p).get("reason") == "ErrImageNeverPull"), None),
        what="ErrImageNeverPull")
    message = f'Container image "{image}" is not present with pull policy of Never'
    assert waiting(pod)["message"] == message
    events = {(r, m) for r, m, _ in messages(kube_cluster, "never")}
    assert ("ErrImageNeverPull", message) in events
    assert ("Failed", "Error: ErrImageNeverPull") in events
    assert not any(r == "Pulling" for r, _ in events)


@pytest.fixture(scope="module")
def private_registry(playground: Playground,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A docker-registry that requires basic auth (htpasswd), holding busybox at
    private/busybox:1; yields (image, password). Credentials only in 0600 files."""
    state = tmp_path_factory.mktemp("private-registry")
    password = base64.urlsafe_b64encode(os.urandom(12)).decode()
    htpasswd = state / "htpasswd"
    htpasswd.write_text("puller:" + bcrypt.hashpw(password.encode(),
                                                  bcrypt.gensalt(rounds=5)).decode() + "\n")
    port = free_port()
    address = f"127.0.0.1:{port}"
    (state / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {json.dumps(str(state / 'data'))}\n"
        f"http:\n  addr: {json.dumps(address)}\n  secret: {os.urandom(8).hex()}\n"
        "auth:\n  htpasswd:\n    realm: test\n"
        f"    path: {json.dumps(str(htpasswd))}\n")
    service = supervisor.Service(
        name="registry", argv=("docker-registry", "serve", str(state / "config.yml")),
        state_dir=state, label=f"the private registry at {address}", port=port,
        host="127.0.0.1", readiness="answering 401 at /v2/", cwd=state,
        env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")})
    supervisor.start(service, timeout_s=30, ready=lambda: _answers(f"http://{address}/v2/"))
    try:
        authfile = state / "auth.json"
        fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"auths": {address: {"auth": base64.b64encode(
                f"puller:{password}".encode()).decode()}}}, handle)
        image = f"{address}/private/busybox:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false",
                        "--dest-tls-verify=false", "--dest-authfile", str(authfile),
                        f"docker://{playground.base}", f"docker://{image}"],
                       check=True, capture_output=True)
        yield image, password
    finally:
        supervisor.stop(name="registry", state_dir=state)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 401
    except httpx.HTTPError:
        return False


def test_image_pull_secrets_authenticate_and_without_them_the_pull_is_unauthorized(
    kube_cluster: Cluster, private_registry: tuple[str, str], pods: list[str],
) -> None:
    image, password = private_registry
    registry = image.split("/", 1)[0]
    config = {"auths": {registry: {"username": "puller", "password": password,
                                   "auth": base64.b64encode(
                                       f"puller:{password}".encode()).decode()}}}
    kube_cluster.create_secret("pull-private", type="kubernetes.io/dockerconfigjson",
                               data={".dockerconfigjson": json.dumps(config)})
    try:
        for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
            name = f"private-{arch}"
            done = run(kube_cluster, pods, pod_body(
                name, image, arch=arch, command=["uname", "-m"],
                imagePullSecrets=[{"name": "pull-private"}]))
            assert done["status"]["phase"] == "Succeeded", done["status"]
            assert kube_cluster.pod_log(name, "main").strip() == machine
        again = run(kube_cluster, pods, pod_body(
            "private-again", image, command=["true"], imagePullSecrets=[{"name": "pull-private"}]))
        assert again["status"]["phase"] == "Succeeded"
        assert ("Pulled", f'Container image "{image}" already present on machine and can be '
                "accessed by the pod", 1) in messages(kube_cluster, "private-again")
        # Pulled with credentials: a pod without them must not use it (kubelet 1.36,
        # KubeletEnsureSecretPulledImages), even with IfNotPresent: it pulls, and fails.
        pods.append("private-anonymous")
        kube_cluster.core.create_namespaced_pod(kube_cluster.namespace, pod_body(
            "private-anonymous", image, command=["true"]))
        refused = kube_cluster.wait_for(
            lambda: next((p for p in kube_cluster.pods()
                          if p["metadata"]["name"] == "private-anonymous"
                          and waiting(p).get("reason") in ("ErrImagePull", "ImagePullBackOff")),
                         None), what="the anonymous pull to fail")
        assert "401 Unauthorized" in waiting(refused)["message"]
        assert password not in json.dumps(kube_cluster.events())
        leftovers = list(Path(kube_cluster.state.state_dir).glob("nodes/*/*/pods/*/auth/*"))
        assert leftovers == [], "an auth file outlived its pull"
    finally:
        kube_cluster.delete_secret("pull-private")


def _overlay_mounts(pid: str = "self") -> list[str]:
    return [line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if str(DEFAULT_CACHE) in line or line.split(" - ", 1)[-1].startswith("overlay ")]


def test_a_killed_agent_leaves_no_mount_on_the_host(
    kube_cluster: Cluster, playground: Playground, pods: list[str],
) -> None:
    """Every mount is made in the container's own namespace: none on the host while the
    container runs, none after its agent is SIGKILLed (its containers die with it)."""
    before = _overlay_mounts()
    node = kube_cluster.add_node(NodeSpec("node-crash", "amd64"))
    try:
        pods.append("doomed")
        body = pod_body("doomed", playground.base, command=["sleep", "300"])
        body["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "node-crash"}
        kube_cluster.core.create_namespaced_pod(kube_cluster.namespace, body)
        wait_phase(kube_cluster, "doomed", {"Running"})
        sleeper = kube_cluster.wait_for(_sleepers, what="the container's process")[0]
        inside = _overlay_mounts(str(sleeper))
        assert inside and f"lowerdir={DEFAULT_CACHE}/sha256-" in inside[0]
        assert _overlay_mounts() == before
        record = supervisor.read_record(
            supervisor.pid_file(Path(kube_cluster.state.state_dir), f"node-{node.name}"))
        assert record is not None
        os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _sleepers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sleepers() == [], "the container outlived its agent"
        assert _overlay_mounts() == before
    finally:
        kube_cluster.remove_node("node-crash")


def _sleepers() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == b"sleep\x00300\x00":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_two_agents_pulling_one_image_at_once_unpack_it_once_and_the_cache_is_bounded(
    playground: Playground, tmp_path: Path,
) -> None:
    """Two processes (as two agents) share the cache under a per-digest lock; beyond its
    size bound the least recently used digest not in use is dropped."""
    cache = tmp_path / "cache"
    program = ("import json, sys; from pathlib import Path; "
               "from tests.cluster.agent.images import ImageStore; "
               "store = ImageStore(cache=Path(sys.argv[1]), node_dir=Path(sys.argv[2]), "
               "arch='arm64'); print(json.dumps(store.pull(sys.argv[3]).unpacked))")
    racers = [subprocess.Popen([sys.executable, "-c", program, str(cache),
                                str(tmp_path / f"node-{i}"), playground.base],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
              for i in range(2)]
    unpacked = [json.loads(r.communicate(timeout=120)[0]) for r in racers]
    assert sorted(unpacked) == [False, True]
    assert len(list(cache.glob("sha256-*"))) == 1
    assert not list(cache.glob(".pull-*")), "a scratch directory was left"
    store = ImageStore(cache=cache, node_dir=tmp_path / "node-0", arch="amd64", max_bytes=1)
    arm64 = store.present(playground.base)
    assert arm64 is not None
    with store.in_use(arm64):  # a container runs on it: never dropped
        amd64 = store.pull(playground.base).image
        assert arm64.rootfs.exists() and amd64.rootfs.exists()
    store.pull(playground.base)  # the same digest again: now arm64 is the LRU one, unused
    assert not arm64.rootfs.exists() and amd64.rootfs.exists()
