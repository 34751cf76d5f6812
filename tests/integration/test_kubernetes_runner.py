"""The flow with runner="kubernetes" against the test cluster: a real control plane
(kube-apiserver, controllers, scheduler) with node agents as kubelets (tests/cluster).

The runner authenticates with a token of the bundle's own ServiceAccount, so every test
runs with exactly the Role we ship. The agents run every container's argv for real on
this machine (arm64 builds through QEMU), so these publish real images to the real local
registry.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from flows.build import PlatformsFailed, build_multiarch_image
from multiarch.cli import main as cli_main
from multiarch.errors import ConfigurationError, MultiarchError, StepFailed, TransientError
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.runners import stop_all
from multiarch.runners.kubernetes import runner as kube_runner
from multiarch.runners.kubernetes.attempt import ATTEMPT, attempt_run_id
from multiarch.runners.kubernetes.manifests import LABEL_PLATFORM, platform_job
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.signing import generate_key
from multiarch.source import PinnedSource
from tests.cluster.fixtures import assert_nothing_left, nfs_dir
from tests.integration.conftest import read_image_file, skopeo_raw, tag_digest
from tests.integration.git_repos import git, make_repo
from tests.integration.prefect_queries import task_run_counts, task_runs

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
ARG GREETING=none
RUN uname -m > /etc/build-arch && printf '%s\\n' "$GREETING" > /etc/greeting
RUN echo built-by-kubernetes-runner
"""
# Kubernetes expands $(VAR) and $$ in container args; these must still arrive verbatim.
TRICKY = "hi $(HOME) $$ $(id -u); `uname` 'q' \"d\""
FAILS_ON_ARM64 = """\
ARG BASE
FROM ${BASE}
RUN if [ "$(uname -m)" = aarch64 ]; then echo "no aarch64 here" >&2; exit 7; fi
"""


@pytest.fixture
def cluster(kube_builder):
    return kube_builder


def assert_carries(received, sent, path: str = "job") -> None:
    """Everything the pure function produced reached the API server unchanged (the audit
    log records the decoded request, with the API's defaults filled in around it)."""
    if isinstance(sent, dict):
        assert isinstance(received, dict), path
        for key, value in sent.items():
            if value in ([], {}, None) and key not in received:
                continue  # an empty field is not serialised by the server
            assert key in received, f"{path}.{key} missing"
            assert_carries(received[key], value, f"{path}.{key}")
    elif isinstance(sent, list):
        assert isinstance(received, list) and len(received) == len(sent), path
        for i, (got, want) in enumerate(zip(received, sent, strict=True)):
            assert_carries(got, want, f"{path}[{i}]")
    else:
        assert received == sent, f"{path}: {received!r} != {sent!r}"


def kube_runner_options(cluster, **extra) -> dict:
    return {
        "kind": "kubernetes",
        "timeout_s": 600,
        "kubernetes": {
            "kubeconfig": str(cluster.kubeconfig),
            "namespace": cluster.namespace,
            "builder_image": cluster.builder_image,
            "unschedulable_grace_s": 2,
            **extra,
        },
    }


def run_flow(cluster, playground, *, image, context, platforms, build_args=None, **kwargs):
    return build_multiarch_image(
        image=image,
        platforms=platforms,
        context=context,
        build_args={"BASE": playground.base, **(build_args or {})},
        insecure_registry=True,
        runner=kube_runner_options(cluster, **kwargs.pop("kube", {})),
        **kwargs,
    )


def test_flow_publishes_a_two_platform_index_through_jobs(
    git_daemon, cluster, playground, prefect_server, tmp_path
):
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    image = f"{playground.address}/tests/kube-hello"
    state = run_flow(
        cluster,
        playground,
        image=f"{image}:latest",
        context=context,
        platforms=["linux/amd64", "linux/arm64"],
        build_args={"GREETING": TRICKY},
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()

    index = json.loads(skopeo_raw(f"{image}:latest"))
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert tag_digest(f"{image}:latest") == result.index_digest
    assert [m["digest"] for m in index["manifests"]] == [p.digest for p in result.platforms]
    for platform in result.platforms:
        scratch = tmp_path / platform.platform.slug
        scratch.mkdir()
        arch = read_image_file(f"{image}@{platform.digest}", "/etc/build-arch", scratch=scratch)
        assert (
            arch.decode().strip()
            == {"amd64": "x86_64", "arm64": "aarch64"}[platform.platform.architecture]
        )
        assert platform.size > 0
        # the arm64 node runs its containers under QEMU and says so (node annotation)
        assert platform.emulated == (platform.platform.architecture == "arm64")
        (scratch / "g").mkdir()
        greeting = read_image_file(
            f"{image}@{platform.digest}", "/etc/greeting", scratch=scratch / "g"
        )
        assert greeting.decode() == TRICKY + "\n"
    flow_run_id = state.state_details.flow_run_id
    assert task_runs(flow_run_id) == {
        "pin source": "Completed",
        "check for changes": "Completed",
        "build linux/amd64": "Completed",
        "build linux/arm64": "Completed",
        "publish": "Completed",
    }

    created = cluster.created_jobs()
    assert len(created) == 3
    arm_job = next(
        j for j in created if j["metadata"]["labels"].get(LABEL_PLATFORM) == "linux-arm64"
    )
    assert arm_job["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    # the wire carries exactly what the pure function produced
    request = BuildRequest(
        image=f"{image}:latest",
        platforms=("linux/amd64", "linux/arm64"),
        context=context,
        build_args={"BASE": playground.base, "GREETING": TRICKY},
        insecure_registry=True,
        runner=kube_runner_options(cluster),
    )
    revision = index["annotations"]["org.opencontainers.image.revision"]
    epoch = int(git("log", "-1", "--format=%ct", cwd=tmp_path / "repo"))
    source = PinnedSource(kind="git", location=context, ref="HEAD", revision=revision,
                          epoch=epoch)
    run_id = attempt_run_id(flow_run_id.hex)
    sent = platform_job(
        request, source, Platform.parse("linux/arm64"), run_id=run_id,
        flow_run_id=str(flow_run_id), attempt=ATTEMPT,
    )
    assert_carries(arm_job, sent)
    assert not (nfs_dir(cluster) / run_id).exists(), "the handoff directory was not cleaned"


def test_no_node_of_the_architecture_fails_fast_with_a_clear_message(
    git_daemon, cluster, playground, prefect_server, tmp_path
):
    """The cluster has amd64 and arm64 nodes only: an s390x build cannot be placed."""
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    started = time.monotonic()
    with pytest.raises(PlatformsFailed) as failure:
        run_flow(
            cluster,
            playground,
            image=f"{playground.address}/tests/kube-noarch:1",
            context=context,
            platforms=["linux/s390x"],
        )
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert "[linux/s390x] no schedulable node" in message
    assert "kubernetes.io/arch=s390x" in message
    assert "didn't match Pod's node affinity/selector" in message  # the scheduler's words
    assert "add a node labelled kubernetes.io/arch=s390x" in message
    assert elapsed < 60  # the flow around it included; the runner gives up within 15 s
    assert tag_digest(f"{playground.address}/tests/kube-noarch:1") is None


def test_evicted_pod_is_retried_and_the_run_succeeds(git_daemon, cluster, playground,
                                                     prefect_server, tmp_path):
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    evicted: list[str] = []

    def evict_first_arm64_build() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not evicted:
            for pod in cluster.pods():
                labels = pod["metadata"].get("labels", {})
                states = {
                    s["name"]: s.get("state", {})
                    for s in pod.get("status", {}).get("initContainerStatuses") or []
                }
                if labels.get(LABEL_PLATFORM) == "linux-arm64" and "running" in states.get(
                    "build", {}
                ):
                    cluster.evict(pod["metadata"]["name"])
                    evicted.append(pod["metadata"]["name"])
                    return
            time.sleep(0.05)

    saboteur = threading.Thread(target=evict_first_arm64_build, daemon=True)
    saboteur.start()
    image = f"{playground.address}/tests/kube-evicted:latest"
    state = run_flow(
        cluster,
        playground,
        image=image,
        context=context,
        platforms=["linux/amd64", "linux/arm64"],
        return_state=True,
    )
    saboteur.join(5)
    assert evicted, "the test never saw the arm64 build running"
    assert state.is_completed(), state.message
    counts = task_run_counts(state.state_details.flow_run_id)
    assert counts["build linux/arm64"] == 2
    assert counts["build linux/amd64"] == 1
    assert tag_digest(image) == state.result().index_digest


def test_failing_run_on_one_platform_publishes_nothing(
    git_daemon, cluster, playground, prefect_server, tmp_path
):
    context = make_repo(git_daemon, tmp_path / "repo", FAILS_ON_ARM64)
    image = f"{playground.address}/tests/kube-fails:latest"
    state = run_flow(
        cluster,
        playground,
        image=image,
        context=context,
        platforms=["linux/amd64", "linux/arm64"],
        return_state=True,
    )
    assert state.is_failed()
    assert "[linux/arm64] step build exited with" in state.message
    assert "no aarch64 here" in state.message
    flow_run_id = state.state_details.flow_run_id
    assert "publish" not in task_runs(flow_run_id)
    assert task_run_counts(flow_run_id)["build linux/arm64"] == 1
    assert tag_digest(image) is None
    assert all(
        j["metadata"]["labels"]["app.kubernetes.io/component"] == "build"
        for j in cluster.created_jobs()
    )


def test_step_logs_arrive_in_order_without_repeats_across_a_dropped_stream(
    git_daemon, cluster, playground, tmp_path
):
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    request = BuildRequest(
        image=f"{playground.address}/tests/kube-logs:1",
        platforms=("linux/amd64",),
        context=context,
        build_args={"BASE": playground.base},
        insecure_registry=True,
        runner=kube_runner_options(cluster),
    )
    source = PinnedSource(
        kind="git",
        location=context,
        ref="HEAD",
        revision=git("rev-parse", "HEAD", cwd=tmp_path / "repo"),
    )
    cluster.drop_log_stream_once(after_lines=3)
    lines: list[str] = []
    image = kube_runner.build_platform_job(
        request,
        source,
        Platform.parse("linux/amd64"),
        run_id="logs1",
        flow_run_id="logs-test",
        emit=lines.append,
    )
    assert image.digest.startswith("sha256:")
    assert cluster.dropped_log_streams == 1, "the log stream was never dropped"
    started = [line.split()[2] for line in lines if line.startswith("[linux/amd64] step ")]
    assert started == ["prepare", "fetch", "build", "export"]
    step_lines = [line for line in lines if line.startswith("[linux/amd64] [")]
    seen = list(dict.fromkeys(line.split("] [", 1)[1].split("]", 1)[0] for line in step_lines))
    assert seen == [step for step in started if step in seen], "step logs out of order"
    assert step_lines.index(next(x for x in step_lines if "[export]" in x)) > step_lines.index(
        next(x for x in step_lines if "[build]" in x)
    )
    build_lines = [line for line in step_lines if line.startswith("[linux/amd64] [build] ")]
    assert any("STEP 1/" in line for line in build_lines)
    assert any("built-by-kubernetes-runner" in line for line in build_lines)
    step_markers = [line for line in build_lines if "STEP " in line or "COMMIT" in line]
    assert len(step_markers) == len(set(step_markers)) >= 4, "a line was repeated after the drop"
    assert any(line.startswith("[linux/amd64] deleted Job") for line in lines)


SLOW = """\
ARG BASE
FROM ${BASE}
RUN sleep 120
"""


def _single_build(git_daemon, cluster, playground, tmp_path, containerfile, **runner):
    context = make_repo(git_daemon, tmp_path / "repo", containerfile)
    options = kube_runner_options(cluster)
    options.update(runner)
    request = BuildRequest(
        image=f"{playground.address}/tests/kube-single:1",
        platforms=("linux/amd64",),
        context=context,
        build_args={"BASE": playground.base},
        insecure_registry=True,
        runner=options,
    )
    source = PinnedSource(
        kind="git",
        location=context,
        ref="HEAD",
        revision=git("rev-parse", "HEAD", cwd=tmp_path / "repo"),
    )
    return lambda emit: kube_runner.build_platform_job(
        request,
        source,
        Platform.parse("linux/amd64"),
        run_id="single",
        flow_run_id="single-test",
        emit=emit,
    )


def test_timeout_fails_the_build_and_deletes_the_job(git_daemon, cluster, playground, tmp_path):
    build = _single_build(git_daemon, cluster, playground, tmp_path, SLOW, timeout_s=8)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failure:
        build(lambda line: None)
    assert time.monotonic() - started < 60
    assert "deadline" in str(failure.value) or "timed out" in str(failure.value)
    assert_nothing_left(cluster)


def test_cancellation_deletes_the_running_job(git_daemon, cluster, playground, tmp_path):
    build = _single_build(git_daemon, cluster, playground, tmp_path, SLOW)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            build(lambda line: None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    cluster.wait_for(
        lambda: any(
            "running" in (s.get("state") or {})
            for p in cluster.pods()
            for s in p.get("status", {}).get("initContainerStatuses") or []
            if s["name"] == "build"
        ),
        timeout=120,
    )
    assert stop_all() is None
    worker.join(60)
    assert not worker.is_alive()
    assert outcome and isinstance(outcome[0], MultiarchError)
    assert_nothing_left(cluster)


def test_credentials_block_gives_cluster_access(cluster, prefect_server):
    from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials

    cluster_config = KubernetesClusterConfig.from_file(cluster.kubeconfig)
    KubernetesCredentials(cluster_config=cluster_config).save("test-cluster", overwrite=True)
    options = KubernetesOptions(credentials_block="test-cluster", namespace=cluster.namespace)
    assert kube_runner.preflight(options) == [
        f"kubernetes: namespace {cluster.namespace} reachable, permissions granted"
    ]


def test_unreachable_api_server_is_explained(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "gone",
                "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "users": [{"name": "u", "user": {}}],
            }
        )
    )
    options = KubernetesOptions(kubeconfig=str(kubeconfig))
    with pytest.raises(TransientError, match="cannot reach the API server"):
        kube_runner.preflight(options)


def test_missing_kubeconfig_is_a_configuration_error(tmp_path):
    options = KubernetesOptions(kubeconfig=str(tmp_path / "nope"))
    with pytest.raises(ConfigurationError, match=r"runner\.kubernetes\.kubeconfig"):
        kube_runner.preflight(options)


def test_missing_builder_image_fails_at_once_with_a_hint(git_daemon, cluster, playground, tmp_path):
    """A tag the registry does not have: the node's pull fails (ErrImagePull, then
    ImagePullBackOff) and the runner names the option to fix."""
    missing = f"{playground.address}/nope/builder:0"
    context = make_repo(git_daemon, tmp_path / "repo2", CONTAINERFILE)
    request = BuildRequest(
        image=f"{playground.address}/tests/kube-nopull:1",
        platforms=("linux/amd64",),
        context=context,
        insecure_registry=True,
        runner=kube_runner_options(cluster, builder_image=missing),
    )
    source = PinnedSource(
        kind="git",
        location=context,
        ref="HEAD",
        revision=git("rev-parse", "HEAD", cwd=tmp_path / "repo2"),
    )
    with pytest.raises(StepFailed) as failure:
        kube_runner.build_platform_job(
            request,
            source,
            Platform.parse("linux/amd64"),
            run_id="nopull",
            flow_run_id="nopull",
            emit=lambda _: None,
        )
    message = str(failure.value)
    assert "cannot pull its image" in message and "ImagePull" in message
    assert "builder_image" in message and missing in message
    assert_nothing_left(cluster)


def test_registry_handoff_needs_no_shared_volume(git_daemon, cluster, playground, prefect_server,
                                                 tmp_path, capsys):
    """Each build pod pushes its platform by digest; no Job mounts a shared claim, and the
    publish Job only writes manifests and attestations, signed with the key of a Secret
    mounted into it alone."""
    context = make_repo(git_daemon, tmp_path / "repo", CONTAINERFILE)
    image = f"{playground.address}/tests/kube-registry-handoff"
    secret_key, public_key = generate_key(tmp_path / "keys")
    cluster.create_secret("signing", data={"signing.key": secret_key.read_bytes()})
    try:
        state = run_flow(cluster, playground, image=f"{image}:latest", context=context,
                         platforms=["linux/amd64", "linux/arm64"], handoff="registry",
                         kube={"signing_key_secret": "signing"}, return_state=True)
    finally:
        cluster.delete_secret("signing")
    assert state.is_completed(), state.message
    result = state.result()
    assert result.signed_by
    assert {(a.subject, a.kind) for a in result.attestations} >= {
        (p, k) for p in ("linux/amd64", "linux/arm64") for k in ("sbom", "provenance")}
    assert cli_main(["verify", f"{image}:latest", "--key", str(public_key)]) == 0, \
        capsys.readouterr().out
    key_text = secret_key.read_text()
    assert "".join(key_text.splitlines()[2:5]) not in json.dumps(cluster.created_jobs())
    assert tag_digest(f"{image}:latest") == result.index_digest
    index = json.loads(skopeo_raw(f"{image}:latest"))
    assert [m["digest"] for m in index["manifests"]] == [p.digest for p in result.platforms]
    created = cluster.created_jobs()
    assert len(created) == 3
    for job in created:
        pod = job["spec"]["template"]["spec"]
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), pod["volumes"]
    builds = [j for j in created if j["metadata"]["labels"].get(LABEL_PLATFORM)]
    for job in builds:
        pod = job["spec"]["template"]["spec"]
        assert [c["name"] for c in [*pod["initContainers"], *pod["containers"]]][-2:] == \
            ["export", "push"]


CACHED = """\
ARG BASE
FROM ${BASE}
RUN head -c 65536 /dev/urandom > /random
COPY late.txt /late.txt
"""


def test_registry_cache_lets_a_fresh_pod_reuse_layers(git_daemon, cluster, playground,
                                                      prefect_server, tmp_path):
    """Pods start with empty storage (emptyDir): with cache=registry the second run's pod
    takes the RUN layer from <repository>/cache-amd64 instead of running it again."""
    repo = tmp_path / "repo"
    context = make_repo(git_daemon, repo, CACHED)
    image = f"{playground.address}/tests/kube-cache"
    layers = []
    for version in ("one", "two"):
        (repo / "late.txt").write_text(version + "\n")
        git("add", ".", cwd=repo)
        git("commit", "--quiet", "-m", version, cwd=repo)
        state = run_flow(cluster, playground, image=f"{image}:latest", context=context,
                         platforms=["linux/amd64"], cache="registry", return_state=True)
        assert state.is_completed(), state.message
        digest = state.result().platforms[0].digest
        manifest = json.loads(skopeo_raw(f"{image}@{digest}"))
        layers.append([layer["digest"] for layer in manifest["layers"]])
    assert layers[0][:-1] == layers[1][:-1], "the RUN layer was built again"
    assert layers[0][-1] != layers[1][-1], "the changed COPY was taken from the cache"
    tags = json.loads(subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{image}/cache-amd64"],
        check=True, capture_output=True, text=True, timeout=60).stdout)["Tags"]
    assert tags, "nothing was pushed to the cache repository"
