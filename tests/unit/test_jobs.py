"""Job manifests: whole expected values, and every variant valid against the official schema."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from multiarch.plan import FETCH_SCRIPT, plan_build
from multiarch.platforms import Platform
from multiarch.publish import PublishSpec, publish_spec_step
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.runners.kubernetes.manifests import (
    REGISTRY_AUTH_FILE,
    build_job,
    label_value,
    node_lost_tolerations,
    node_selector,
    owner_reference,
    platform_job,
    pod_paths,
    publish_job,
)
from multiarch.runners.kubernetes.options import KubernetesOptions, PlatformPlacement
from multiarch.source import PinnedSource

SCHEMA_VERSIONS = [f"1.{minor}.0" for minor in range(28, 38)]
SHA = "0123456789abcdef0123456789abcdef01234567"
SOURCE = PinnedSource(
    kind="git", location="https://git.example.com/team/hello.git", revision=SHA, ref="main"
)


def request(**kube) -> BuildRequest:
    return BuildRequest(
        image="registry.example.com/team/hello:1.0",
        platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"),
        context=SOURCE.location,
        build_args={"GREETING": "hi $(id); `x`"},
        runner=RunnerOptions(kind="kubernetes", kubernetes=KubernetesOptions(**kube)),
    )


def manifest_for(platform: str, **kube) -> dict:
    req = request(**kube)
    target = Platform.parse(platform)
    paths = pod_paths("run1", target, req.runner.kubernetes)
    plan = plan_build(req, SOURCE, target, paths, run_id="run1")
    return build_job(
        plan.steps,
        platform=target,
        options=req.runner.kubernetes,
        flow_run_id="1f0e-run",
        image_name=req.image.name,
        timeout_s=1800,
    )


def test_build_job_for_arm64_is_exactly_this():
    labels = {
        "app.kubernetes.io/name": "multiarch-builder",
        "app.kubernetes.io/managed-by": "multiarch-builder",
        "app.kubernetes.io/component": "build",
        "multiarch.dev/flow-run-id": "1f0e-run",
        "multiarch.dev/image": "hello",
        "multiarch.dev/platform": "linux-arm64",
    }
    mounts = [
        {"name": "shared", "mountPath": "/shared"},
        {"name": "workspace", "mountPath": "/workspace"},
        {"name": "storage", "mountPath": "/var/lib/multiarch/storage"},
    ]

    def step(name, argv, env=None):
        return {
            "name": name,
            "image": "multiarch-builder:latest",
            "imagePullPolicy": "IfNotPresent",
            "command": [argv[0]],
            "args": argv[1:],
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
            "volumeMounts": mounts,
            "securityContext": {"privileged": True} if name in ("build", "export") else {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }

    storage = [
        "--root",
        "/var/lib/multiarch/storage/root",
        "--runroot",
        "/var/lib/multiarch/storage/runroot",
        "--storage-driver",
        "overlay",
    ]
    image = "localhost/multiarch/linux-arm64:run1"
    assert manifest_for("linux/arm64") == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": "hello-linux-arm64-",
            "namespace": "multiarch",
            "labels": labels,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 1800,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"},
                    # a lost node's pod goes after 60 s, not Kubernetes' 300 s
                    "tolerations": [
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 60},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 60},
                    ],
                    "initContainers": [
                        step(
                            "fetch",
                            [
                                "sh",
                                "-c",
                                FETCH_SCRIPT.replace("$", "$$"),
                                "fetch",
                                SOURCE.location,
                                "/workspace/src",
                                SHA,
                            ],
                            {"GIT_TERMINAL_PROMPT": "0"},
                        ),
                        step(
                            "build",
                            [
                                "buildah",
                                *storage,
                                "build",
                                "--isolation",
                                "chroot",
                                "--platform",
                                "linux/arm64/v8",
                                "--format",
                                "oci",
                                "--build-arg",
                                "GREETING=hi $$(id); `x`",
                                "--label",
                                f"org.opencontainers.image.source={SOURCE.location}",
                                "--label",
                                f"org.opencontainers.image.revision={SHA}",
                                "--tag",
                                image,
                                "/workspace/src",
                            ],
                            {"BUILDAH_ISOLATION": "chroot"},
                        ),
                    ],
                    "containers": [
                        step(
                            "export",
                            [
                                "skopeo",
                                "copy",
                                "--digestfile",
                                "/dev/termination-log",
                                "--dest-compress",
                                "--dest-compress-format",
                                "gzip",
                                "containers-storage:[overlay@/var/lib/multiarch/storage/"
                                "root+/var/lib/multiarch/storage/runroot]" + image,
                                "oci:/shared/run1/linux-arm64:image",
                            ],
                        ),
                    ],
                    "volumes": [
                        {
                            "name": "shared",
                            "persistentVolumeClaim": {"claimName": "multiarch-shared"},
                        },
                        {"name": "workspace", "emptyDir": {}},
                        {"name": "storage", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def test_arm_variant_goes_through_the_configured_node_label():
    options = KubernetesOptions(arm_variant_label="example.com/arm-version")
    assert node_selector(Platform.parse("linux/arm/v7"), options) == {
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm",
        "example.com/arm-version": "v7",
    }


def test_placement_adds_selector_tolerations_and_resources():
    pi = PlatformPlacement(
        node_selector={"node.example.com/board": "rpi4"},
        tolerations=[{"key": "node-role/pi", "operator": "Exists", "effect": "NoSchedule"}],
        resources={"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "3Gi"}},
    )
    manifest = manifest_for("linux/arm64", placements={"linux/aarch64": pi})
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["node.example.com/board"] == "rpi4"
    assert pod["tolerations"][:1] == pi.tolerations
    assert all(c["resources"] == pi.resources for c in [*pod["initContainers"], *pod["containers"]])
    other = manifest_for("linux/amd64", placements={"linux/arm64": pi})["spec"]["template"]
    assert other["spec"]["tolerations"] == node_lost_tolerations(KubernetesOptions())


def test_a_lost_node_s_pod_goes_after_the_configured_toleration():
    """Kubernetes' default keeps a pod on an unreachable node 300 s; a placement that
    tolerates one of those taints itself keeps its own toleration for it."""
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
           "effect": "NoExecute", "tolerationSeconds": 900}
    manifest = manifest_for("linux/arm64", node_lost_toleration_s=5,
                            placements={"linux/arm64": PlatformPlacement(tolerations=[own])})
    assert manifest["spec"]["template"]["spec"]["tolerations"] == [
        own, {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
              "effect": "NoExecute", "tolerationSeconds": 5}]
    with pytest.raises(ValueError, match="node_lost_toleration_s"):
        KubernetesOptions(node_lost_toleration_s=0)


UNPRIVILEGED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
MINIMAL = {
    "privileged": False,
    "capabilities": {"add": ["SYS_ADMIN", "SYS_CHROOT", "SETFCAP", "MKNOD"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "appArmorProfile": {"type": "Unconfined"},
}


def _contexts(pod: dict) -> dict[str, dict]:
    return {c["name"]: c["securityContext"] for c in [*pod.get("initContainers", []),
                                                       *pod["containers"]]}


@pytest.mark.parametrize("security", ["privileged", "minimal"])
@pytest.mark.parametrize("handoff", ["shared", "registry"])
def test_only_the_store_steps_get_privileges(security, handoff):
    """buildah and the export from its store need mounts; prepare, git, push hold none."""
    req = request(security=security).model_copy(update={"handoff": handoff})
    pod = platform_job(req, SOURCE, Platform.parse("linux/arm64"), run_id="r",
                       flow_run_id="f")["spec"]["template"]["spec"]
    store = {"privileged": True} if security == "privileged" else MINIMAL
    expected = {"prepare": UNPRIVILEGED, "fetch": UNPRIVILEGED, "build": store, "export": store}
    if handoff == "registry":
        expected["push"] = UNPRIVILEGED
    assert _contexts(pod) == expected


@pytest.mark.parametrize("security", ["privileged", "minimal"])
def test_the_publish_container_holds_no_privileges(security):
    pod = publish_manifest(registry_secret="reg", security=security)["spec"]["template"]["spec"]
    assert _contexts(pod) == {"publish": UNPRIVILEGED}


def test_minimal_security_mounts_no_host_device():
    """docs/kubernetes.md: a hostPath /dev/fuse is blocked by the device cgroup."""
    pod = manifest_for("linux/amd64", security="minimal")["spec"]["template"]["spec"]
    assert not any("hostPath" in volume for volume in pod["volumes"])
    assert all(m["name"] != "dev-fuse" for c in [*pod["initContainers"], *pod["containers"]]
               for m in c["volumeMounts"])


def test_jobs_carry_the_attempt_label_and_the_owner():
    owner = owner_reference(name="flow-run-abc", uid="1234-uid")
    req = request()
    build = platform_job(req, SOURCE, Platform.parse("linux/amd64"), run_id="r",
                         flow_run_id="f", attempt="a1b2", owner=owner)
    publish = publish_job(publish_spec_step(PublishSpec(
        image=req.image, tags=req.all_tags, insecure=False, source=SOURCE, images=(),
        index_dir="/shared/r/index"), result_file="/dev/termination-log"),
        options=req.runner.kubernetes, flow_run_id="f", image_name=req.image.name,
        timeout_s=60, attempt="a1b2", owner=owner)
    for job in (build, publish):
        assert job["metadata"]["ownerReferences"] == [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "flow-run-abc", "uid": "1234-uid"}]
        assert job["metadata"]["labels"]["multiarch.dev/attempt"] == "a1b2"
        assert job["spec"]["template"]["metadata"]["labels"]["multiarch.dev/attempt"] == "a1b2"
    assert "ownerReferences" not in manifest_for("linux/amd64")["metadata"]


def logins(manifest: dict) -> dict[str, str | None]:
    """Each container's registry login volume (None: it sees no registry credentials)."""
    pod = manifest["spec"]["template"]["spec"]
    return {c["name"]: next((m["name"] for m in c.get("volumeMounts", [])
                             if m["name"] in ("registry-auth", "pull-auth")), None)
            for c in [*pod.get("initContainers", []), *pod["containers"]]}


def test_only_the_build_step_gets_a_login_to_pull_its_bases_as_a_file():
    manifest = manifest_for("linux/amd64", registry_secret="registry-auth")
    assert logins(manifest) == {"fetch": None, "build": "registry-auth", "export": None}
    pod = manifest["spec"]["template"]["spec"]
    build = next(c for c in pod["initContainers"] if c["name"] == "build")
    assert {"name": "REGISTRY_AUTH_FILE", "value": REGISTRY_AUTH_FILE} in build["env"]
    assert "registry-auth" in json.dumps(pod["volumes"])
    # a pull-only login keeps the push credentials out of the build pod altogether
    pulling = manifest_for("linux/amd64", registry_secret="registry-auth",
                           pull_secret="registry-read")
    assert logins(pulling) == {"fetch": None, "build": "pull-auth", "export": None}
    volumes = pulling["spec"]["template"]["spec"]["volumes"]
    assert [v["secret"]["secretName"] for v in volumes if v["name"] == "pull-auth"] == \
        ["registry-read"]
    assert "registry-auth" not in json.dumps(volumes)
    assert "REGISTRY_AUTH_FILE" not in json.dumps(manifest_for("linux/amd64"))


def publish_manifest(**kube) -> dict:
    req = request(**kube)
    spec = PublishSpec(
        image=req.image,
        tags=req.all_tags,
        insecure=False,
        source=SOURCE,
        images=(),
        index_dir="/shared/run1/index",
    )
    return publish_job(
        publish_spec_step(spec, result_file="/dev/termination-log"),
        options=req.runner.kubernetes,
        flow_run_id="1f0e-run",
        image_name=req.image.name,
        timeout_s=600,
        selector={"kubernetes.io/os": "linux"},
    )


def test_publish_job_mounts_the_secret_only_into_its_push_step():
    pod = publish_manifest(registry_secret="registry-auth")["spec"]["template"]["spec"]
    (step,) = pod["containers"]
    assert "initContainers" not in pod
    assert step["command"] == ["multiarch"]
    assert step["args"][:2] == ["publish-layouts", "--spec"]
    assert {
        "name": "REGISTRY_AUTH_FILE",
        "value": "/run/multiarch/registry-auth/.dockerconfigjson",
    } in step["env"]
    assert {
        "name": "registry-auth",
        "mountPath": "/run/multiarch/registry-auth",
        "readOnly": True,
    } in step["volumeMounts"]
    secret_volume = next(v for v in pod["volumes"] if v["name"] == "registry-auth")
    assert secret_volume["secret"]["secretName"] == "registry-auth"


def test_signing_key_secret_is_mounted_only_into_the_publish_step_by_path():
    from multiarch.attest import supply_plan
    from multiarch.runners.kubernetes.runner import publish_spec

    req = request(signing_key_secret="signing")
    plan = supply_plan(req, SOURCE, None, invocation_id="run1")
    spec = publish_spec(req, SOURCE, [], run_id="run1", supply=plan)
    assert spec.supply is not None
    assert spec.supply.sign_key_file == "/run/multiarch/signing/signing.key"
    manifest = publish_job(publish_spec_step(spec, result_file="/dev/termination-log"),
                           options=req.runner.kubernetes, flow_run_id="f",
                           image_name=req.image.name, timeout_s=600)
    pod = manifest["spec"]["template"]["spec"]
    (step,) = pod["containers"]
    assert {"name": "signing-key", "mountPath": "/run/multiarch/signing",
            "readOnly": True} in step["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "signing-key")
    assert volume["secret"] == {"secretName": "signing", "defaultMode": 0o400,
                                "items": [{"key": "signing.key", "path": "signing.key"}]}
    for platform in ("linux/amd64", "linux/arm64"):
        build = json.dumps(manifest_for(platform, signing_key_secret="signing"))
        assert "signing" not in build


def test_the_publish_pod_is_told_only_the_platforms_that_built():
    """arm64 optional and failed: the pod publishes, attests and signs amd64 and arm/v7."""
    from multiarch.attest import supply_plan
    from multiarch.results import PlatformImage
    from multiarch.runners.kubernetes.runner import publish_spec

    req = BuildRequest.model_validate({**request().model_dump(mode="json"),
                                       "optional_platforms": ["linux/arm64"]})
    built = [PlatformImage(platform=Platform.parse(p), digest="sha256:" + c * 64, size=0,
                           emulated=False, duration_s=1.0, layout=f"/shared/run1/{p}")
             for p, c in (("linux/amd64", "a"), ("linux/arm/v7", "b"))]
    spec = publish_spec(req, SOURCE, built, run_id="run1",
                        supply=supply_plan(req, SOURCE, None, invocation_id="run1"))
    step = publish_spec_step(spec, result_file="/dev/termination-log")
    sent = PublishSpec.model_validate_json(step.argv[step.argv.index("--spec") + 1])
    assert [str(i.platform) for i in sent.images] == ["linux/amd64", "linux/arm/v7"]
    assert "linux/arm64" not in step.argv[step.argv.index("--spec") + 1]


def test_git_credentials_secret_is_mounted_only_into_the_fetch_step():
    manifest = manifest_for("linux/arm64", git_credentials_secret="git-creds")
    pod = manifest["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}
    mount = {"name": "git-credentials", "mountPath": "/run/multiarch/git-credentials",
             "readOnly": True}
    assert [name for name, c in steps.items() if mount in c["volumeMounts"]] == ["fetch"]
    assert steps["fetch"]["args"][-4:] == [
        "-c", "credential.helper=", "-c",
        "credential.helper=store --file=/run/multiarch/git-credentials/.git-credentials",
    ]  # fmt: skip
    assert steps["fetch"]["env"] == [{"name": "GIT_TERMINAL_PROMPT", "value": "0"}]
    assert all("valueFrom" not in e for c in steps.values() for e in c["env"])
    volume = next(v for v in pod["volumes"] if v["name"] == "git-credentials")
    assert volume["secret"] == {"secretName": "git-creds", "defaultMode": 0o400,
                                "items": [{"key": ".git-credentials",
                                           "path": ".git-credentials"}]}


def test_a_context_with_credentials_never_reaches_the_job():
    dirty = "https://bob:s3cret-token@git.example.com/team/hello.git"
    req = BuildRequest(image="registry.example.com/team/hello:1.0", platforms=("linux/amd64",),
                       context=dirty, runner=RunnerOptions(kind="kubernetes"))
    source = PinnedSource(kind="git", location=dirty, revision=SHA, ref="main")
    manifest = platform_job(req, source, Platform.parse("linux/amd64"), run_id="r",
                            flow_run_id="f")
    text = json.dumps(manifest)
    assert "s3cret" not in text
    assert "https://git.example.com/team/hello.git" in text
    assert "git-credentials" not in text  # no Secret configured: no helper, no volume


def test_label_values_are_kubernetes_safe():
    assert label_value("linux/arm/v7") == "linux-arm-v7"
    assert label_value("x" * 80 + "-") == "x" * 63
    assert label_value("-._weird name!") == "weird-name"


VARIANTS = [
    ("linux/amd64", {}),
    ("linux/arm64", {"security": "minimal"}),
    ("linux/arm/v7", {"registry_secret": "reg"}),
    ("linux/amd64", {"git_credentials_secret": "git-creds", "security": "minimal"}),
    (
        "linux/arm64",
        {
            "placements": {
                "linux/arm64": {
                    "node_selector": {"pi": "yes"},
                    "tolerations": [
                        {"key": "pi", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
                    ],
                    "resources": {"limits": {"memory": "4Gi", "cpu": "3"}},
                }
            }
        },
    ),
]


# `minimal` sets the container's appArmorProfile, a field since Kubernetes 1.30.
MINIMAL_SINCE = 30


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_validates_against_the_official_schema(version):
    minor = int(version.split(".")[1])
    variants = [(platform, kube) for platform, kube in VARIANTS
                if kube.get("security") != "minimal" or minor >= MINIMAL_SINCE]
    manifests = [manifest_for(platform, **kube) for platform, kube in variants]
    manifests += [publish_manifest(), publish_manifest(registry_secret="reg", security="minimal"),
                  publish_manifest(signing_key_secret="signing"),
                  publish_manifest(registry_ca_configmap="registry-ca"),
                  manifest_for("linux/arm64", registry_ca_configmap="registry-ca")]
    owner = owner_reference(name="flow-run-job", uid="0b9c-uid")
    manifests.append(platform_job(request(), SOURCE, Platform.parse("linux/arm64"), run_id="r",
                                  flow_run_id="f", attempt="a1b2", owner=owner))
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_publish_pod_is_told_the_index_format():
    from multiarch.publish import PublishSpec
    from multiarch.runners.kubernetes.runner import publish_spec

    docker = request().model_copy(update={"index_format": "docker"})
    for req, wanted in ((request(), "oci"), (docker, "docker")):
        step = publish_spec_step(publish_spec(req, SOURCE, [], run_id="run1"),
                                 result_file="/dev/termination-log")
        spec = PublishSpec.model_validate_json(step.argv[step.argv.index("--spec") + 1])
        assert spec.index_format == wanted


def test_the_registry_ca_from_a_configmap_is_where_every_step_reads_it():
    """containers-certs.d(5): skopeo, buildah and our publish step all look there."""
    spec = manifest_for("linux/arm64", registry_ca_configmap="registry-ca")["spec"]["template"][
        "spec"]
    assert {"name": "registry-ca", "configMap": {
        "name": "registry-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in spec["volumes"]
    for step in [*spec.get("initContainers", []), *spec["containers"]]:
        assert {"name": "registry-ca", "readOnly": True,
                "mountPath": "/etc/containers/certs.d/registry.example.com"} in step[
                    "volumeMounts"], step["name"]
    plain = manifest_for("linux/arm64")["spec"]["template"]["spec"]
    assert not [v for v in plain["volumes"] if v["name"] == "registry-ca"]
