"""Kubernetes Job manifests as data: a pure function from a plan and options to a batch/v1 Job.

Built apart from any API call so that tests can compare whole manifests and validate
every one against the official Kubernetes schema. Each plan step becomes a container in
exec form (command + args, no shell), init containers running in order; the pod is
pinned by nodeSelector to a node of the platform's architecture.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from multiarch.build_secrets import kube_secret_ref
from multiarch.plan import PlanPaths, plan_build, prepare_layout_step
from multiarch.platforms import Platform
from multiarch.process import Step
from multiarch.request import BuildRequest
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.source import PinnedSource

APP_NAME = "multiarch-builder"
LABEL_FLOW_RUN = "multiarch.dev/flow-run-id"
LABEL_PLATFORM = "multiarch.dev/platform"
LABEL_IMAGE = "multiarch.dev/image"
LABEL_COMPONENT = "app.kubernetes.io/component"
# One process is one attempt of a flow run (a rescheduled run is a new pod, same flow-run
# id): this label tells this attempt's Jobs from a previous attempt's leftovers.
LABEL_ATTEMPT = "multiarch.dev/attempt"
# On a Node: "true" when it runs its containers under emulation (QEMU), not natively.
ANNOTATION_EMULATED = "multiarch.dev/emulated"

# In-pod paths. Container storage sits on an emptyDir (local disk): overlay fails on NFS.
SHARED_MOUNT = "/shared"
WORKSPACE_MOUNT = "/workspace"
STORAGE_MOUNT = "/var/lib/multiarch/storage"
REGISTRY_AUTH_MOUNT = "/run/multiarch/registry-auth"
REGISTRY_AUTH_FILE = f"{REGISTRY_AUTH_MOUNT}/.dockerconfigjson"
SIGNING_KEY_MOUNT = "/run/multiarch/signing"
# containers-certs.d(5): where skopeo, buildah and multiarch.registry_access look for a CA
CERTS_D = "/etc/containers/certs.d"
REGISTRY_CA_KEY = "ca.crt"
SIGNING_KEY_NAME = "signing.key"
SIGNING_KEY_FILE = f"{SIGNING_KEY_MOUNT}/{SIGNING_KEY_NAME}"
PUBLISH_STEP = "publish"
# Git credentials: a Secret mounted into the fetch step only, read by git's store helper.
GIT_CREDENTIALS_MOUNT = "/run/multiarch/git-credentials"
GIT_CREDENTIALS_KEY = ".git-credentials"
GIT_CREDENTIALS_FILE = f"{GIT_CREDENTIALS_MOUNT}/{GIT_CREDENTIALS_KEY}"
FETCH_STEP = "fetch"
# Build secrets (runner.kubernetes.build_secrets): one projected volume, each Secret's key
# a file named by its id, mounted into the build step only.
BUILD_SECRETS_MOUNT = "/run/multiarch/build-secrets"
BUILD_STEP = "build"
TERMINATION_LOG = "/dev/termination-log"

_LABEL_VALUE_RE = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(text: str) -> str:
    """A Kubernetes label value: at most 63 characters of [A-Za-z0-9._-], alnum at both ends."""
    cleaned = _LABEL_VALUE_RE.sub("-", text)[:63]
    return cleaned.strip("-._")


def escape_expansion(arg: str) -> str:
    """Keep an argument verbatim: Kubernetes expands `$(VAR)` and turns `$$` into `$` in
    command and args, so every `$` is doubled (the API's own escape)."""
    return arg.replace("$", "$$")


def pod_paths(run_id: str, platform: Platform, options: KubernetesOptions | None = None,
              *, handoff: str = "shared") -> PlanPaths:
    """Where a build pod keeps things. Shared handoff: the layout on the shared volume (the
    same path for the publish pod), and export, the last step, reports the digest in its
    termination message. Registry handoff: the layout in the pod's workspace, and the push,
    then the last step, reports it."""
    git_secret = options is not None and options.git_credentials_secret is not None
    shared = handoff == "shared"
    return PlanPaths(
        checkout=f"{WORKSPACE_MOUNT}/src",
        storage_root=f"{STORAGE_MOUNT}/root",
        storage_runroot=f"{STORAGE_MOUNT}/runroot",
        layout=f"{SHARED_MOUNT}/{run_id}/{platform.slug}" if shared
        else f"{WORKSPACE_MOUNT}/layout",
        digest_file=TERMINATION_LOG if shared else f"{WORKSPACE_MOUNT}/digest",
        report_file=None if shared else TERMINATION_LOG,
        git_credentials=GIT_CREDENTIALS_FILE if git_secret else None,
        secret_files=tuple((secret_id, f"{BUILD_SECRETS_MOUNT}/{secret_id}")
                           for secret_id in (options.build_secrets if options else {})),
    )


def job_labels(*, component: str, flow_run_id: str, image_name: str,
               platform: Platform | None, attempt: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/managed-by": APP_NAME,
        LABEL_COMPONENT: component,
        LABEL_FLOW_RUN: label_value(flow_run_id),
        LABEL_IMAGE: label_value(image_name.rsplit("/", 1)[-1]),
    }
    if platform is not None:
        labels[LABEL_PLATFORM] = label_value(platform.slug)
    if attempt is not None:
        labels[LABEL_ATTEMPT] = label_value(attempt)
    return labels


def owner_reference(*, name: str, uid: str) -> dict[str, str]:
    """The flow-run pod's Job as owner: the garbage collector deletes our Jobs with it.

    Not a controller reference (no controller manages these Jobs for it), and no
    blockOwnerDeletion, which would need `update` on the owner's finalizers."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}


def generate_name(image_name: str, suffix: str) -> str:
    """`hello-linux-arm64-`: readable in `kubectl get jobs`, room for the random part."""
    base = label_value(f"{image_name.rsplit('/', 1)[-1]}-{suffix}").lower().replace("_", "-")
    base = base.replace(".", "-")[:50].strip("-")
    return f"{base}-"


def node_selector(platform: Platform, options: KubernetesOptions) -> dict[str, str]:
    """kubernetes.io/os + arch from the platform; the ARM variant through a node label."""
    selector = {"kubernetes.io/os": platform.os, "kubernetes.io/arch": platform.architecture}
    if platform.architecture == "arm" and platform.variant:
        selector[options.arm_variant_label] = platform.variant
    selector.update(options.placement(platform).node_selector)
    return selector


# The containers that open the container store: buildah builds there, and skopeo exports
# from it. skopeo opening a store without the capabilities it wants (below) re-executes
# itself in a user namespace, which fails in a pod (measured with every capability
# dropped: "writing 0 0 1 to gid_map: operation not permitted"); so the export needs what
# the build needs. skopeo between layouts and registries (push, publish) needs nothing.
STORE_STEPS = frozenset({"build", "export"})

# Every other container (prepare, fetch, push, publish): root in the image, as the tools
# expect (runAsNonRoot is not set), but with no capabilities, no way to gain any, and the
# runtime's seccomp filter. Pod Security "restricted" minus runAsNonRoot.
UNPRIVILEGED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# `minimal`: added to the runtime's default set, which containerd and CRI-O both fill with
# CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETUID and SETGID (RUN steps that install or switch
# users). skopeo 1.9 wants CHOWN, DAC_OVERRIDE, FOWNER, FSETID, MKNOD and SETFCAP, or it
# re-executes itself in a one-uid user namespace and cannot read files of other owners:
# CRI-O's set lacks MKNOD and SETFCAP (measured: the export fails without them).
MINIMAL_CAPABILITIES = ("SYS_ADMIN", "SYS_CHROOT", "SETFCAP", "MKNOD")


def security_context(options: KubernetesOptions, *, step: str = "build") -> dict[str, Any]:
    """What a container may do: only the store steps get more than nothing.

    privileged: simplest and works with overlay and chroot isolation everywhere.
    minimal: no privileged flag; SYS_ADMIN (overlay and chroot-isolation mounts), SYS_CHROOT
    (missing from CRI-O's default set), SETFCAP (files with capabilities in layers), MKNOD
    (device nodes in layers; skopeo wants it). The RuntimeDefault seccomp filter allows
    mount and unshare once SYS_ADMIN is held, but the default AppArmor profile denies
    mount, hence Unconfined AppArmor. No /dev/fuse: a hostPath device is blocked by the
    device cgroup (docs/kubernetes.md, step 6).
    """
    if step not in STORE_STEPS:
        return copy.deepcopy(UNPRIVILEGED)
    if options.security == "privileged":
        return {"privileged": True}
    return {
        "privileged": False,
        "capabilities": {"add": list(MINIMAL_CAPABILITIES)},
        "seccompProfile": {"type": "RuntimeDefault"},
        "appArmorProfile": {"type": "Unconfined"},
    }


def container(step: Step, *, options: KubernetesOptions, mounts: Sequence[Mapping[str, Any]],
              resources: Mapping[str, Any], extra_env: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
    env = {**step.env, **(extra_env or {})}
    spec: dict[str, Any] = {
        "name": step.name,
        "image": options.builder_image,
        "imagePullPolicy": options.image_pull_policy,
        "command": [escape_expansion(step.argv[0])],
        "args": [escape_expansion(arg) for arg in step.argv[1:]],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumeMounts": [dict(m) for m in mounts],
        "securityContext": security_context(options, step=step.name),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    if resources:
        spec["resources"] = dict(resources)
    return spec


def _login_volume(step: str, options: KubernetesOptions, *,
                  push_steps: Sequence[str]) -> str | None:
    """The registry login a step gets: the push one for a pushing step, the pull one (or
    the push one when none is given) for the build step, which pulls its bases."""
    if step in push_steps:
        return "registry-auth" if options.registry_secret else None
    if step == BUILD_STEP:
        if options.pull_secret:
            return "pull-auth"
        return "registry-auth" if options.registry_secret else None
    return None


def pod_volumes(options: KubernetesOptions, *, with_registry_auth: bool,
                with_git_credentials: bool = False, shared: bool = True,
                with_signing_key: bool = False, with_build_secrets: bool = False,
                with_pull_auth: bool = False) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        *([{"name": "shared", "persistentVolumeClaim": {"claimName": options.shared_claim}}]
          if shared else []),
        {"name": "workspace", "emptyDir": {}},
        {"name": "storage", "emptyDir": {}},
    ]
    if with_registry_auth and options.registry_secret:
        volumes.append({"name": "registry-auth", "secret": {
            "secretName": options.registry_secret,
            "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}],
        }})
    if with_pull_auth and options.pull_secret:
        volumes.append({"name": "pull-auth", "secret": {
            "secretName": options.pull_secret,
            "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}],
        }})
    if with_git_credentials and options.git_credentials_secret:
        volumes.append({"name": "git-credentials", "secret": {
            "secretName": options.git_credentials_secret,
            "items": [{"key": GIT_CREDENTIALS_KEY, "path": GIT_CREDENTIALS_KEY}],
            "defaultMode": 0o400,
        }})
    if with_build_secrets and options.build_secrets:
        volumes.append({"name": "build-secrets", "projected": {
            "defaultMode": 0o400,
            "sources": [secret_projection(secret_id, ref)
                        for secret_id, ref in options.build_secrets.items()],
        }})
    if options.registry_ca_configmap:
        volumes.append({"name": "registry-ca", "configMap": {
            "name": options.registry_ca_configmap,
            "items": [{"key": REGISTRY_CA_KEY, "path": REGISTRY_CA_KEY}],
        }})
    if with_signing_key and options.signing_key_secret:
        volumes.append({"name": "signing-key", "secret": {
            "secretName": options.signing_key_secret,
            "items": [{"key": SIGNING_KEY_NAME, "path": SIGNING_KEY_NAME}],
            "defaultMode": 0o400,
        }})
    return volumes


def secret_projection(secret_id: str, ref: str) -> dict[str, Any]:
    """One build secret, `SECRET[/KEY]`: only that key, as the file named by its id."""
    name, key = kube_secret_ref(secret_id, ref)
    return {"secret": {"name": name, "items": [{"key": key, "path": secret_id}]}}


def _mounts(options: KubernetesOptions, *, shared: bool = True,
            registry: str | None = None) -> list[dict[str, Any]]:
    mounts = [
        *([{"name": "shared", "mountPath": SHARED_MOUNT}] if shared else []),
        {"name": "workspace", "mountPath": WORKSPACE_MOUNT},
        {"name": "storage", "mountPath": STORAGE_MOUNT},
    ]
    if options.registry_ca_configmap and registry:
        mounts.append({"name": "registry-ca", "mountPath": f"{CERTS_D}/{registry}",
                       "readOnly": True})
    return mounts


def job_manifest(
    steps: Sequence[Step], *, options: KubernetesOptions, labels: Mapping[str, str],
    name_prefix: str, timeout_s: int, selector: Mapping[str, str] | None,
    tolerations: Sequence[Mapping[str, Any]] = (), resources: Mapping[str, Any] | None = None,
    push_steps: Sequence[str] = (), shared: bool = True,
    owner: Mapping[str, str] | None = None, registry: str | None = None,
) -> dict[str, Any]:
    """One Job running `steps` in order; the steps named in `push_steps` see the push
    credentials and the build step the pull ones (pull_secret, else registry_secret: it
    pulls the bases), only the fetch step git credentials, only the build step build
    secrets and only the publish step the signing key (as mounted files, never a value).
    Every step trusts the CA of `registry`.
    `shared`: mount the shared handoff volume (not needed by the registry handoff).
    `owner`: an `owner_reference`, set when the flow runs in a pod of the same namespace."""
    if not steps:
        raise ValueError("a Job needs at least one step")
    mounts = _mounts(options, shared=shared, registry=registry)
    containers = []
    fetches = any(step.name == FETCH_STEP for step in steps)
    for step in steps:
        step_mounts = list(mounts)
        extra_env = None
        login = _login_volume(step.name, options, push_steps=push_steps)
        if login is not None:
            step_mounts.append({"name": login, "mountPath": REGISTRY_AUTH_MOUNT,
                                "readOnly": True})
            extra_env = {"REGISTRY_AUTH_FILE": REGISTRY_AUTH_FILE}
        if step.name == FETCH_STEP and options.git_credentials_secret:
            step_mounts.append({"name": "git-credentials", "mountPath": GIT_CREDENTIALS_MOUNT,
                                "readOnly": True})
        if step.name == BUILD_STEP and options.build_secrets:
            step_mounts.append({"name": "build-secrets", "mountPath": BUILD_SECRETS_MOUNT,
                                "readOnly": True})
        if step.name == PUBLISH_STEP and options.signing_key_secret:
            step_mounts.append({"name": "signing-key", "mountPath": SIGNING_KEY_MOUNT,
                                "readOnly": True})
        containers.append(container(step, options=options, mounts=step_mounts,
                                    resources=resources or {}, extra_env=extra_env))
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # build steps never talk to the API
        "containers": containers[-1:],
        "volumes": pod_volumes(options, with_registry_auth=any(
                                   _login_volume(s.name, options, push_steps=push_steps)
                                   == "registry-auth" for s in steps),
                               with_git_credentials=fetches, shared=shared,
                               with_signing_key=any(s.name == PUBLISH_STEP for s in steps),
                               with_build_secrets=any(s.name == BUILD_STEP for s in steps),
                               with_pull_auth=any(
                                   _login_volume(s.name, options, push_steps=push_steps)
                                   == "pull-auth" for s in steps)),
    }
    if len(containers) > 1:
        pod_spec["initContainers"] = containers[:-1]
    if selector:
        pod_spec["nodeSelector"] = dict(selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    metadata: dict[str, Any] = {"generateName": name_prefix, "namespace": options.namespace,
                                "labels": dict(labels)}
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,  # Prefect owns retries
            "activeDeadlineSeconds": timeout_s,
            "ttlSecondsAfterFinished": options.ttl_after_finished_s,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


# The taints the node lifecycle controller puts on a node that stops reporting. Kubernetes
# gives every pod 300 s of tolerance for them (DefaultTolerationSeconds); a build on a lost
# node cannot finish, so ours say how soon the taint manager deletes the pod and the build
# is retried elsewhere.
NODE_LOST_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


def node_lost_tolerations(options: KubernetesOptions, *,
                          given: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """NoExecute tolerations of `node_lost_toleration_s` for the node-lost taints, except
    for a taint the placement's own tolerations (`given`) already speak of."""
    own = {t.get("key") for t in given}
    return [{"key": key, "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": options.node_lost_toleration_s}
            for key in NODE_LOST_TAINTS if key not in own]


def build_job(steps: Sequence[Step], *, platform: Platform, options: KubernetesOptions,
              flow_run_id: str, image_name: str, timeout_s: int,
              handoff: str = "shared", cache: str = "none", attempt: str | None = None,
              owner: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A platform's Job. Registry handoff: no shared volume, and the push step gets the
    registry Secret; registry cache: the build step too (it pulls and pushes cache layers).
    No other step sees registry credentials."""
    placement = options.placement(platform)
    shared = handoff == "shared"
    return job_manifest(
        steps, options=options,
        labels=job_labels(component="build", flow_run_id=flow_run_id, image_name=image_name,
                          platform=platform, attempt=attempt),
        name_prefix=generate_name(image_name, platform.slug), timeout_s=timeout_s,
        selector=node_selector(platform, options),
        tolerations=[*placement.tolerations,
                     *node_lost_tolerations(options, given=placement.tolerations)],
        resources=placement.resources, shared=shared, owner=owner,
        push_steps=(*(() if shared else ("push",)), *(("build",) if cache == "registry" else ())),
        registry=registry_of(image_name),
    )


def publish_job(step: Step, *, options: KubernetesOptions, flow_run_id: str, image_name: str,
                timeout_s: int, selector: Mapping[str, str] | None = None,
                shared: bool = True, attempt: str | None = None,
                owner: Mapping[str, str] | None = None) -> dict[str, Any]:
    return job_manifest(
        [step], options=options,
        labels=job_labels(component="publish", flow_run_id=flow_run_id, image_name=image_name,
                          platform=None, attempt=attempt),
        name_prefix=generate_name(image_name, "publish"), timeout_s=timeout_s,
        selector=selector, tolerations=node_lost_tolerations(options),
        push_steps=(step.name,), shared=shared, owner=owner, registry=registry_of(image_name),
    )


def registry_of(image_name: str) -> str:
    """`reg.example:5000/team/app` -> `reg.example:5000` (image names here are qualified)."""
    return image_name.split("/", 1)[0]


def platform_job(request: BuildRequest, source: PinnedSource, platform: Platform, *,
                 run_id: str, flow_run_id: str, attempt: str | None = None,
                 owner: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The whole Job for one platform of a request: prepare the layout, then the plan."""
    paths = pod_paths(run_id, platform, request.runner.kubernetes, handoff=request.handoff)
    plan = plan_build(request, source, platform, paths, run_id=run_id)
    return build_job((prepare_layout_step(plan.layout), *plan.steps), platform=platform,
                     options=request.runner.kubernetes, flow_run_id=flow_run_id,
                     image_name=request.image.name, timeout_s=request.runner.timeout_s,
                     handoff=request.handoff, cache=request.cache, attempt=attempt,
                     owner=owner)
