"""Tests OF the fake cluster: it must behave like Kubernetes for the official client.

Everything goes through `kubernetes` 37.0.1 over HTTP (typed models, so every object the
fake serves must also deserialize), and every container really runs on this machine.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import urllib3
from kubernetes import client, config, watch

from devtools.busybox import prepare_busybox_context
from tests.kube.cluster import FakeCluster, NodeSpec, Taint, start_fake_cluster

pytestmark = pytest.mark.integration

NS = "multiarch"


class Api:
    def __init__(self, cluster: FakeCluster) -> None:
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(cluster.kubeconfig), client_configuration=configuration
        )
        api_client = client.ApiClient(configuration)
        self.core, self.batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)


@pytest.fixture
def api(kube_cluster: FakeCluster) -> Api:
    return Api(kube_cluster)


def container(
    name: str,
    *argv: str,
    mounts: list[dict[str, Any]] | None = None,
    image: str = "registry.example.com/builder:1",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": list(argv[:1]),
        "args": list(argv[1:]),
        "volumeMounts": mounts or [],
        **extra,
    }


def job(
    *containers: dict[str, Any],
    init: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    arch: str = "amd64",
    labels: dict[str, str] | None = None,
    **pod: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": list(containers),
        "nodeSelector": {"kubernetes.io/arch": arch},
        **pod,
    }
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "test-", "labels": labels or {"suite": "fake"}},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": labels or {}}, "spec": spec},
        },
    }


def create(api: Api, manifest: dict[str, Any]) -> str:
    return api.batch.create_namespaced_job(NS, client.V1Job.from_dict(manifest)).metadata.name


def pod_of(api: Api, job_name: str, *, timeout: float = 20) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = api.core.list_namespaced_pod(NS, label_selector=f"job-name={job_name}").items
        if pods:
            return pods[0]
        time.sleep(0.05)
    raise TimeoutError(f"no pod for Job {job_name}")


def wait_pod(api: Api, name: str, until: Any, *, timeout: float = 30) -> dict[str, Any]:
    """Watch one pod (fieldSelector) until `until(raw pod)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = raw(api, api.core.read_namespaced_pod(name, NS))
        if until(current):
            return current
        for event in watch.Watch().stream(
            api.core.list_namespaced_pod,
            NS,
            field_selector=f"metadata.name={name}",
            resource_version=current["metadata"]["resourceVersion"],
            timeout_seconds=2,
        ):
            if until(event["raw_object"]):
                return event["raw_object"]
    raise TimeoutError(f"pod {name} never reached the expected state")


def wait_job(api: Api, name: str, *, timeout: float = 30) -> client.V1Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.batch.read_namespaced_job(name, NS)
        kinds = {c.type for c in found.status.conditions or [] if c.status == "True"}
        if kinds & {"Complete", "Failed"}:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"Job {name} did not finish")


def raw(api: Api, model: Any) -> dict[str, Any]:
    """A typed object back to its JSON form (camelCase keys)."""
    return api.core.api_client.sanitize_for_serialization(model)


def phase(pod: dict[str, Any]) -> str:
    return pod["status"].get("phase", "")


def terminal(pod: dict[str, Any]) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def state_of(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod["status"]
    entries = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
    return next(e for e in entries if e["name"] == name)["state"]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- the API server ------------------------------------------------------------------------


def test_generate_name_uid_resource_version_and_defaults(api: Api, kube_cluster: FakeCluster):
    first = api.batch.create_namespaced_job(
        NS, client.V1Job.from_dict(job(container("main", "true")))
    )
    second = api.batch.create_namespaced_job(
        NS, client.V1Job.from_dict(job(container("main", "true")))
    )
    for created in (first, second):
        assert created.metadata.name.startswith("test-")
        assert len(created.metadata.name) == len("test-") + 5
        assert created.metadata.name[5:].isalnum() and created.metadata.name[5:].islower()
        assert created.metadata.uid and created.metadata.creation_timestamp
        labels = created.spec.template.metadata.labels
        assert labels["job-name"] == created.metadata.name
        assert labels["batch.kubernetes.io/controller-uid"] == created.metadata.uid
    assert first.metadata.uid != second.metadata.uid
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    sent = kube_cluster.created_jobs()
    assert [j["metadata"] for j in sent] == [
        {"generateName": "test-", "labels": {"suite": "fake"}}
    ] * 2


def test_invalid_job_is_rejected_like_the_api_server(api: Api):
    manifest = job(container("main", "true"))
    del manifest["spec"]["template"]["spec"]["restartPolicy"]
    manifest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "nope", "mountPath": "/x"}
    ]
    with pytest.raises(client.ApiException) as raised:
        create(api, manifest)
    assert raised.value.status == 422
    message = json.loads(raised.value.body)["message"]
    assert (
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", '
        '"Never"' in message
    )
    assert 'spec.template.spec.containers[0].volumeMounts[0].name: Not found: "nope"' in message
    with pytest.raises(client.ApiException) as missing:
        api.batch.read_namespaced_job("does-not-exist", NS)
    assert missing.value.status == 404


def test_label_selector_filters_list_and_watch(api: Api):
    kept = create(api, job(container("main", "sleep", "5"), labels={"team": "a", "tier": "x"}))
    create(api, job(container("main", "sleep", "5"), labels={"team": "b", "tier": "x"}))
    names = {
        j.metadata.name
        for j in api.batch.list_namespaced_job(NS, label_selector="team=a,tier=x").items
    }
    assert names == {kept}
    assert len(api.batch.list_namespaced_job(NS, label_selector="team in (a,b)").items) == 2
    assert (
        api.batch.list_namespaced_job(NS, label_selector="team!=a").items[0].metadata.name != kept
    )
    seen = {
        e["object"].metadata.name
        for e in watch.Watch().stream(
            api.batch.list_namespaced_job, NS, label_selector="team=a", timeout_seconds=1
        )
    }
    assert seen == {kept}


def test_watch_ends_after_timeout_seconds(api: Api):
    started = time.monotonic()
    events = list(watch.Watch().stream(api.core.list_namespaced_pod, NS, timeout_seconds=1))
    assert events == []
    assert 0.9 <= time.monotonic() - started < 3


def test_watch_streams_a_job_as_it_progresses(api: Api):
    listed = api.batch.list_namespaced_job(NS)
    name = create(api, job(container("main", "/bin/sh", "-c", "sleep 0.3")))
    events = []
    for event in watch.Watch().stream(
        api.batch.list_namespaced_job,
        NS,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=15,
    ):
        events.append((event["type"], event["raw_object"]))
        conditions = event["raw_object"]["status"].get("conditions", [])
        if any(c["type"] == "Complete" for c in conditions):
            break
    assert events[0][0] == "ADDED" and events[0][1]["metadata"]["name"] == name
    assert {t for t, _ in events[1:]} == {"MODIFIED"}
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert any(o["status"].get("active") == 1 for _, o in events)
    final = events[-1][1]["status"]
    assert [c["type"] for c in final["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert final["succeeded"] == 1 and final["startTime"] and final["completionTime"]


def test_list_pages_with_limit_and_continue(api: Api):
    names = {create(api, job(container("main", "true"))) for _ in range(3)}
    first = api.batch.list_namespaced_job(NS, limit=2)
    assert len(first.items) == 2 and first.metadata.remaining_item_count == 1
    rest = api.batch.list_namespaced_job(NS, limit=2, _continue=first.metadata.var_continue)
    assert {j.metadata.name for j in first.items + rest.items} == names
    assert rest.metadata.var_continue is None


def test_kmock_reactions_inject_faults(api: Api, kube_cluster: FakeCluster):
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "code": 503,
        "reason": "ServiceUnavailable",
        "message": "etcd leader changed",
    }
    jobs = kmock.resource("batch/v1/jobs")
    kube_cluster.server[kmock.method.POST, jobs][:1] << 503 << status
    with pytest.raises(client.ApiException) as refused:
        create(api, job(container("main", "true")))
    assert refused.value.status == 503
    create(api, job(container("main", "true")))
    assert len(kube_cluster.created_jobs()) == 2 and len(kube_cluster.jobs()) == 1


# --- running Jobs ---------------------------------------------------------------------------


def test_job_runs_its_container_and_serves_its_log(api: Api):
    name = create(api, job(container("main", "/bin/sh", "-c", "echo one; echo two; echo three")))
    done = wait_job(api, name)
    assert [(c.type, c.status) for c in done.status.conditions] == [
        ("SuccessCriteriaMet", "True"),
        ("Complete", "True"),
    ]
    assert done.status.succeeded == 1 and not done.status.active
    pod = pod_of(api, name)
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name == "node-amd64"
    assert pod.metadata.name.startswith(f"{name}-") and len(pod.metadata.name) == len(name) + 6
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "Job",
        name,
        done.metadata.uid,
        True,
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert api.core.read_namespaced_pod_log(pod.metadata.name, NS) == "one\ntwo\nthree\n"
    stamped = api.core.read_namespaced_pod_log(pod.metadata.name, NS, timestamps=True)
    stamps, lines = zip(*(line.split(" ", 1) for line in stamped.splitlines()), strict=True)
    assert lines == ("one", "two", "three")
    assert all(len(s) == 30 and s.endswith("Z") for s in stamps) and list(stamps) == sorted(stamps)
    assert api.core.read_namespaced_pod_log(pod.metadata.name, NS, tail_lines=1) == "three\n"


def test_follow_streams_lines_as_they_are_written(api: Api):
    name = create(
        api,
        job(
            container("main", "/bin/sh", "-c", "for i in 1 2 3 4; do echo line $i; sleep 0.2; done")
        ),
    )
    pod = pod_of(api, name).metadata.name
    wait_pod(api, pod, lambda p: "running" in state_of(p, "main") or terminal(p))
    response = api.core.read_namespaced_pod_log(
        pod, NS, container="main", follow=True, _preload_content=False
    )
    arrivals = []
    started = time.monotonic()
    for chunk in response.stream(1024):
        arrivals.append((time.monotonic() - started, chunk.decode()))
    text = "".join(chunk for _, chunk in arrivals)
    assert text == "line 1\nline 2\nline 3\nline 4\n"
    assert arrivals[-1][0] - arrivals[0][0] > 0.3  # streamed, not buffered to the end
    assert response.headers["Content-Type"].startswith("text/plain")


def test_log_since_and_raw_query_forms(api: Api, kube_cluster: FakeCluster):
    name = create(api, job(container("main", "/bin/sh", "-c", "echo early; sleep 1.5; echo late")))
    wait_job(api, name)
    pod = pod_of(api, name).metadata.name
    assert api.core.read_namespaced_pod_log(pod, NS, since_seconds=1) == "late\n"
    base = f"{kube_cluster.api_url}/api/v1/namespaces/{NS}/pods"
    with httpx.Client() as http:
        stamped = http.get(f"{base}/{pod}/log", params={"timestamps": "true"}).text
        late_stamp = stamped.splitlines()[1].split(" ")[0]
        since = http.get(f"{base}/{pod}/log", params={"sinceTime": late_stamp})
        assert since.text == "late\n"
        assert since.headers["content-type"].startswith("text/plain")
        for flag in ("True", "1"):  # what async clients and curl users send
            watched = http.get(
                base,
                params={
                    "watch": flag,
                    "timeoutSeconds": "1",
                    "fieldSelector": f"metadata.name={pod}",
                },
            )
            events = [json.loads(line) for line in watched.text.splitlines()]
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
                ("ADDED", pod)
            ]


def test_failing_init_container_fails_pod_and_job(api: Api, kube_cluster: FakeCluster):
    name = create(
        api,
        job(
            container("main", "/bin/sh", "-c", "echo main ran"),
            init=[
                container("fetch", "/bin/sh", "-c", "echo fetched"),
                container("build", "/bin/sh", "-c", "echo broken >&2; exit 7"),
                container("export", "/bin/sh", "-c", "echo exported"),
            ],
        ),
    )
    done = wait_job(api, name)
    failed = next(c for c in done.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert [c.type for c in done.status.conditions] == ["FailureTarget", "Failed"]
    assert done.status.failed == 1
    pod = wait_pod(api, pod_of(api, name).metadata.name, terminal)
    assert phase(pod) == "Failed"
    build = state_of(pod, "build")["terminated"]
    assert (build["exitCode"], build["reason"]) == (7, "Error")
    assert state_of(pod, "fetch")["terminated"]["reason"] == "Completed"
    assert state_of(pod, "export") == {"waiting": {"reason": "PodInitializing"}}
    assert state_of(pod, "main") == {"waiting": {"reason": "PodInitializing"}}
    assert kube_cluster.pod_log(pod["metadata"]["name"], "main") == ""
    assert (
        api.core.read_namespaced_pod_log(pod["metadata"]["name"], NS, container="build")
        == "broken\n"
    )
    with pytest.raises(client.ApiException) as waiting:
        api.core.read_namespaced_pod_log(pod["metadata"]["name"], NS, container="main")
    assert waiting.value.status == 400
    assert "is waiting to start: PodInitializing" in waiting.value.body


def test_termination_message_and_var_expansion(api: Api):
    name = create(
        api,
        job(
            container(
                "main",
                "/bin/sh",
                "-c",
                "echo $(GREETING) $$HOME > /dev/termination-log",
                env=[{"name": "GREETING", "value": "hello"}],
            )
        ),
    )
    wait_job(api, name)
    pod = pod_of(api, name)
    assert pod.status.container_statuses[0].state.terminated.message == "hello /root\n"


def test_missing_executable_is_a_start_error(api: Api):
    name = create(api, job(container("main", "no-such-tool", "--version")))
    wait_job(api, name)
    terminated = pod_of(api, name).status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert 'exec: "no-such-tool": executable file not found in $PATH' in terminated.message


# --- scheduling -------------------------------------------------------------------------------


def test_unschedulable_until_a_matching_node_joins(tmp_path: Path):
    with start_fake_cluster(tmp_path, nodes=[NodeSpec("node-amd64", arch="amd64")]) as cluster:
        api = Api(cluster)
        name = create(api, job(container("main", "true"), arch="arm64"))
        pod = pod_of(api, name).metadata.name
        pending = wait_pod(
            api,
            pod,
            lambda p: any(c["type"] == "PodScheduled" for c in p["status"].get("conditions", [])),
        )
        condition = next(c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
        assert (phase(pending), condition["status"], condition["reason"]) == (
            "Pending",
            "False",
            "Unschedulable",
        )
        assert condition["message"] == (
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        )
        events = api.core.list_namespaced_event(
            NS, field_selector=f"involvedObject.name={pod}"
        ).items
        failed = [e for e in events if e.reason == "FailedScheduling"]
        assert len(failed) == 1 and failed[0].type == "Warning"
        assert failed[0].message == condition["message"]
        assert failed[0].source.component == "default-scheduler"
        time.sleep(0.3)
        assert api.core.read_namespaced_pod(pod, NS).status.phase == "Pending"

        cluster.add_node(NodeSpec("node-arm64", arch="arm64"))
        assert wait_job(api, name).status.succeeded == 1
        assert api.core.read_namespaced_pod(pod, NS).spec.node_name == "node-arm64"
        assert not cluster.agent_errors


def test_taints_need_tolerations(tmp_path: Path):
    pi = NodeSpec(
        "pi-1",
        arch="arm64",
        labels={"node-role/pi": "true"},
        taints=[Taint("node-role/pi", "true", "NoSchedule")],
    )
    with start_fake_cluster(tmp_path, nodes=[NodeSpec("node-amd64"), pi]) as cluster:
        api = Api(cluster)
        blocked = pod_of(api, create(api, job(container("main", "true"), arch="arm64")))
        pending = wait_pod(
            api,
            blocked.metadata.name,
            lambda p: any(c["type"] == "PodScheduled" for c in p["status"].get("conditions", [])),
        )
        message = next(
            c["message"] for c in pending["status"]["conditions"] if c["type"] == "PodScheduled"
        )
        assert message.startswith(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
            "1 node(s) had untolerated taint {node-role/pi: true}. "
        )
        tolerated = create(
            api,
            job(
                container("main", "true"),
                arch="arm64",
                tolerations=[
                    {
                        "key": "node-role/pi",
                        "operator": "Equal",
                        "value": "true",
                        "effect": "NoSchedule",
                    }
                ],
            ),
        )
        assert wait_job(api, tolerated).status.succeeded == 1
        assert pod_of(api, tolerated).spec.node_name == "pi-1"
        assert api.core.read_namespaced_pod(blocked.metadata.name, NS).status.phase == "Pending"


# --- volumes ----------------------------------------------------------------------------------


def test_volumes_appear_at_their_in_pod_paths(api: Api, kube_cluster: FakeCluster, tmp_path: Path):
    kube_cluster.create_secret(
        "registry-auth",
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": '{"auths": {}}'},
    )
    volumes = [
        {"name": "shared", "persistentVolumeClaim": {"claimName": "multiarch-shared"}},
        {"name": "scratch", "emptyDir": {}},
        {
            "name": "auth",
            "secret": {
                "secretName": "registry-auth",
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            },
        },
    ]
    mounts = [
        {"name": "shared", "mountPath": "/shared"},
        {"name": "shared", "mountPath": "/runs/current", "subPath": "run-1"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "auth", "mountPath": "/run/auth", "readOnly": True},
    ]
    writer = create(
        api,
        job(
            container(
                "main",
                "/bin/sh",
                "-c",
                "cat /scratch/from-init > /shared/handoff; cat /run/auth/config.json; "
                "echo in-sub-path > /runs/current/file; "
                "touch /run/auth/x 2>/dev/null || echo read-only",
                mounts=mounts,
            ),
            init=[
                container(
                    "init", "/bin/sh", "-c", "echo from init > /scratch/from-init", mounts=mounts
                )
            ],
            volumes=volumes,
        ),
    )
    wait_job(api, writer)
    assert (
        api.core.read_namespaced_pod_log(pod_of(api, writer).metadata.name, NS)
        == '{"auths": {}}read-only\n'
    )
    assert (tmp_path / "nfs" / "handoff").read_text() == "from init\n"
    assert (tmp_path / "nfs" / "run-1" / "file").read_text() == "in-sub-path\n"
    assert not Path("/shared/handoff").exists()  # bound in the pod's namespace only

    reader = create(
        api,
        job(
            container(
                "main", "/bin/sh", "-c", "cat /shared/handoff; ls /scratch | wc -l", mounts=mounts
            ),
            volumes=volumes,
            arch="arm64",
        ),
    )
    wait_job(api, reader)
    assert (
        api.core.read_namespaced_pod_log(pod_of(api, reader).metadata.name, NS) == "from init\n0\n"
    )


def test_buildah_overlay_storage_on_an_empty_dir(
    api: Api, kube_cluster: FakeCluster, tmp_path: Path
):
    context = tmp_path / "nfs" / "context"
    context.mkdir(parents=True)
    # the project's own busybox (Debian's busybox-static, fetched by apt), never the host's
    binaries = prepare_busybox_context(dest=tmp_path / "busybox", cache_dir=tmp_path / "debs",
                                       arches=("amd64",))
    shutil.copy(binaries / "busybox-amd64", context / "busybox")
    (context / "Containerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /arch"]\n'
    )
    storage = "/var/lib/multiarch/storage"
    mounts = [{"name": "shared", "mountPath": "/shared"}, {"name": "storage", "mountPath": storage}]
    name = create(
        api,
        job(
            container(
                "build",
                "buildah",
                "--root",
                f"{storage}/root",
                "--runroot",
                f"{storage}/runroot",
                "--storage-driver",
                "overlay",
                "build",
                "--isolation",
                "chroot",
                "-t",
                "localhost/fake:1",
                "/shared/context",
                mounts=mounts,
            ),
            volumes=[
                {"name": "shared", "persistentVolumeClaim": {"claimName": "multiarch-shared"}},
                {"name": "storage", "emptyDir": {}},
            ],
        ),
    )
    done = wait_job(api, name, timeout=120)
    pod = pod_of(api, name).metadata.name
    log = api.core.read_namespaced_pod_log(pod, NS)
    assert done.status.succeeded == 1, log
    assert "Successfully tagged localhost/fake:1" in log
    pod_dir = next((tmp_path / "fake-cluster" / "kubelet").glob("*/pods/*"))
    assert (
        pod_dir / "volumes" / "kubernetes.io~empty-dir" / "storage" / "root" / "overlay"
    ).is_dir()


# --- deletion, eviction, node loss ------------------------------------------------------------


def _sleeper(api: Api, tmp_path: Path) -> tuple[str, str, int]:
    """A Job whose container records its pid on the shared volume and sleeps: (job, pod,
    pid). `$$$$` because Kubernetes turns `$$` into `$` before the shell sees it."""
    name = create(
        api,
        job(
            container(
                "main",
                "/bin/sh",
                "-c",
                "echo $$$$ > /shared/pid; exec sleep 300",
                mounts=[{"name": "shared", "mountPath": "/shared"}],
            ),
            volumes=[
                {"name": "shared", "persistentVolumeClaim": {"claimName": "multiarch-shared"}}
            ],
        ),
    )
    pod_name = pod_of(api, name).metadata.name
    wait_pod(api, pod_name, lambda p: "running" in state_of(p, "main"))
    pid_file = tmp_path / "nfs" / "pid"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the container never wrote its pid"
        time.sleep(0.05)
    return name, pod_name, int(pid_file.read_text())


def test_background_delete_removes_pod_and_kills_process(api: Api, tmp_path: Path):
    name, _, pid = _sleeper(api, tmp_path)
    assert alive(pid)
    api.batch.delete_namespaced_job(name, NS, propagation_policy="Background")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        alive(pid) or api.core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
    ):
        time.sleep(0.05)
    assert not alive(pid)
    assert api.core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items == []
    with pytest.raises(client.ApiException):
        api.batch.read_namespaced_job(name, NS)


def test_delete_without_propagation_orphans_the_pod(api: Api, tmp_path: Path):
    name, pod, pid = _sleeper(api, tmp_path)
    api.batch.delete_namespaced_job(name, NS)  # batch/v1 default: orphan
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            api.batch.read_namespaced_job(name, NS)
        except client.ApiException:
            break
        time.sleep(0.05)
    orphan = api.core.read_namespaced_pod(pod, NS)
    assert not orphan.metadata.owner_references and orphan.status.phase == "Running"
    assert alive(pid)
    api.core.delete_namespaced_pod(pod, NS)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_foreground_delete_keeps_the_job_until_its_pod_is_gone(api: Api, tmp_path: Path):
    name, _, _ = _sleeper(api, tmp_path)
    api.batch.delete_namespaced_job(name, NS, propagation_policy="Foreground")
    deleting = api.batch.read_namespaced_job(name, NS)
    assert deleting.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in deleting.metadata.finalizers
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            api.batch.read_namespaced_job(name, NS)
        except client.ApiException as exc:
            assert exc.status == 404
            break
        time.sleep(0.05)
    else:
        pytest.fail("the Job was never deleted")
    assert api.core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items == []


def test_evicted_pod_fails_with_reason_evicted(api: Api, kube_cluster: FakeCluster, tmp_path: Path):
    name, pod, pid = _sleeper(api, tmp_path)
    kube_cluster.evict(pod)
    evicted = wait_pod(api, pod, terminal)
    assert (phase(evicted), evicted["status"]["reason"]) == ("Failed", "Evicted")
    assert evicted["status"]["message"].startswith("The node was low on resource: memory.")
    disruption = next(c for c in evicted["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert disruption["reason"] == "TerminationByKubelet"
    assert not alive(pid)
    failed = wait_job(api, name)
    assert [c.reason for c in failed.status.conditions if c.type == "Failed"] == [
        "BackoffLimitExceeded"
    ]


def test_lost_node_pods_fail_and_are_collected(api: Api, kube_cluster: FakeCluster, tmp_path: Path):
    name, pod, pid = _sleeper(api, tmp_path)
    seen: list[tuple[str, dict[str, Any]]] = []
    rv = api.core.read_namespaced_pod(pod, NS).metadata.resource_version
    kube_cluster.lose_node("node-amd64")
    for event in watch.Watch().stream(
        api.core.list_namespaced_pod,
        NS,
        resource_version=rv,
        field_selector=f"metadata.name={pod}",
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["raw_object"]))
        if event["type"] == "DELETED":
            break
    assert not alive(pid)
    failed = next(o for _, o in seen if phase(o) == "Failed")
    disruption = next(c for c in failed["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert (disruption["reason"], disruption["message"]) == (
        "DeletionByPodGC",
        "PodGC: node no longer exists",
    )
    assert seen[-1][0] == "DELETED"
    assert "node-amd64" not in {n.metadata.name for n in api.core.list_node().items}
    assert [c.reason for c in wait_job(api, name).status.conditions if c.type == "Failed"] == [
        "BackoffLimitExceeded"
    ]


def test_job_deadline_kills_the_pod(api: Api, tmp_path: Path):
    manifest = job(container("main", "sleep", "300"))
    manifest["spec"]["activeDeadlineSeconds"] = 1
    name = create(api, manifest)
    failed = wait_job(api, name, timeout=10)
    assert [(c.type, c.reason) for c in failed.status.conditions] == [
        ("FailureTarget", "DeadlineExceeded"),
        ("Failed", "DeadlineExceeded"),
    ]
    deadline = time.monotonic() + 10
    while api.core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items:
        assert time.monotonic() < deadline, "the pod was never deleted"
        time.sleep(0.05)


def test_ttl_after_finished_deletes_job_and_pod(api: Api):
    manifest = job(container("main", "true"))
    manifest["spec"]["ttlSecondsAfterFinished"] = 0
    name = create(api, manifest)
    deadline = time.monotonic() + 10
    while (
        api.batch.list_namespaced_job(NS).items
        or api.core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
    ):
        assert time.monotonic() < deadline, "the finished Job was not cleaned up"
        time.sleep(0.05)


def test_image_pull_back_off(api: Api, kube_cluster: FakeCluster):
    kube_cluster.unpullable_images.add("registry.example.com/missing:1")
    name = create(api, job(container("main", "true", image="registry.example.com/missing:1")))
    pod = pod_of(api, name).metadata.name
    stuck = wait_pod(
        api,
        pod,
        lambda p: state_of(p, "main").get("waiting", {}).get("reason") == "ImagePullBackOff",
    )
    assert phase(stuck) == "Pending"
    assert (
        state_of(stuck, "main")["waiting"]["message"]
        == 'Back-off pulling image "registry.example.com/missing:1"'
    )
    reasons = {
        e.reason
        for e in api.core.list_namespaced_event(
            NS, field_selector=f"involvedObject.name={pod}"
        ).items
    }
    assert {"Failed", "BackOff"} <= reasons
    kube_cluster.unpullable_images.discard("registry.example.com/missing:1")
    assert wait_job(api, name).status.succeeded == 1


def test_oom_killed_container(api: Api, kube_cluster: FakeCluster):
    kube_cluster.oom_containers.add("hungry")
    name = create(api, job(container("hungry", "sleep", "300")))
    wait_job(api, name)
    terminated = pod_of(api, name).status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")


# --- log streams ----------------------------------------------------------------------------


def _follow(api: Api, pod: str) -> Iterator[str]:
    response = api.core.read_namespaced_pod_log(
        pod, NS, container="main", follow=True, _preload_content=False
    )
    buffer = b""
    try:
        for chunk in response.stream(1024):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            yield from (line.decode() for line in lines)
    finally:
        response.release_conn()


def test_drop_log_stream_once_closes_a_follow_stream(api: Api, kube_cluster: FakeCluster):
    name = create(
        api,
        job(
            container(
                "main", "/bin/sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.1; done"
            )
        ),
    )
    pod = pod_of(api, name).metadata.name
    wait_pod(api, pod, lambda p: "running" in state_of(p, "main") or terminal(p))
    kube_cluster.drop_log_stream_once(after_lines=2)
    received: list[str] = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        received.extend(_follow(api, pod))
    assert received == ["line 1", "line 2"]
    assert list(_follow(api, pod)) == [f"line {i}" for i in range(1, 7)]  # only once


def test_nothing_is_left_running_after_stop(tmp_path: Path):
    mount_points = [Path("/shared"), Path("/dev/termination-log")]
    existed = [p.exists() for p in mount_points]
    cluster = start_fake_cluster(tmp_path)
    try:
        _, _, pid = _sleeper(Api(cluster), tmp_path)
        assert alive(pid)
    finally:
        cluster.stop()
    assert not alive(pid)
    assert [p.exists() for p in mount_points] == existed  # in-pod mount points are removed
    assert not list((tmp_path / "fake-cluster" / "kubelet").glob("*/pods/*"))
