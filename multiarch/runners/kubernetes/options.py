"""Options of the Kubernetes runner: where Jobs run and how their pods are shaped.

Plain data, validated like every other input; nothing here talks to a cluster. Secrets
appear only by name (a Secret, a credentials block), never by value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from multiarch.build_secrets import SECRET_ID_RE
from multiarch.parameters import Cli
from multiarch.platforms import Platform

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_ARM_VARIANT_LABEL = "multiarch.dev/arm-variant"
SECRET_KEY_RE = re.compile(r"^[-._A-Za-z0-9]{1,253}$")
LABEL_NAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_PREFIX_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
                             r"(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")


def check_label(key: str, value: str) -> None:
    """A Kubernetes label (`[prefix/]name` = value); the API server would refuse the Job."""
    prefix, _, name = key.rpartition("/")
    if not LABEL_NAME_RE.match(name) or (prefix and not LABEL_PREFIX_RE.match(prefix)):
        raise ValueError(
            f"label key {key!r} is invalid: [dns.prefix/]name, the name up to 63 letters, "
            "digits, - _ . starting and ending alphanumeric (e.g. kubernetes.io/hostname)"
        )
    if value and not LABEL_NAME_RE.match(value):
        raise ValueError(
            f"label value {value!r} of {key!r} is invalid: up to 63 letters, digits, - _ . "
            "starting and ending alphanumeric"
        )


class PlatformPlacement(BaseModel):
    """Extra scheduling for one platform, e.g. tolerations for tainted Raspberry Pis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels the node must also carry."
    )

    @field_validator("node_selector")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            check_label(key, label)
        return value
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations (Kubernetes Toleration objects)."
    )
    resources: dict[str, Any] = Field(
        default_factory=dict, description="Container resources: requests/limits."
    )


class KubernetesOptions(BaseModel):
    """How per-platform and publish Jobs are created."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field("multiarch", description="Namespace of the Jobs.")
    builder_image: str = Field(
        "multiarch-builder:latest",
        description="Image with buildah, skopeo, git and this project "
        "(deployments/builder/Containerfile).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    shared_claim: str = Field(
        "multiarch-shared", description="RWX PersistentVolumeClaim for the handoff (NFS)."
    )
    registry_secret: str | None = Field(
        None,
        description="Secret (kubernetes.io/dockerconfigjson) mounted as a file into the steps "
        "that push (and, unless pull_secret is set, into the build step, which pulls the "
        "bases); never an environment value.",
    )
    pull_secret: str | None = Field(
        None,
        description="Secret (kubernetes.io/dockerconfigjson) the build step pulls its bases "
        "with (FROM, COPY --from); default registry_secret. A pull-only login here keeps "
        "push rights out of the build step.",
    )
    registry_ca_configmap: str | None = Field(
        None,
        description="ConfigMap whose key `ca.crt` (the PEM CA of the image's registry) is "
        "mounted into every step as /etc/containers/certs.d/REGISTRY/ca.crt, where skopeo, "
        "buildah and the publish step all read it (not a secret: a ConfigMap, any step).",
    )
    git_credentials_secret: str | None = Field(
        None,
        description="Secret whose key `.git-credentials` (git-credential-store lines, "
        "https://USER:TOKEN@HOST) is mounted only into the fetch step of a git build.",
    )
    signing_key_secret: str | None = Field(
        None,
        description="Secret whose key `signing.key` (an armored GPG secret key) is mounted "
        "only into the publish step, which signs the index, platforms and attestations.",
    )
    build_secrets: Annotated[dict[str, str], Cli("--kube-secret")] = Field(
        default_factory=dict,
        description="Build secrets on kubernetes: ID=SECRET[/KEY] (KEY defaults to ID), "
        "the Secret's key projected as a file into the build container only, read by "
        "RUN --mount=type=secret,id=ID; names only, never values (the local runner's "
        "counterpart is secrets).",
    )
    security: Literal["privileged", "minimal"] = Field(
        "privileged",
        description="Privileges of the build and export containers (every other container "
        "has none). privileged: simplest, works everywhere; minimal: SYS_ADMIN, SYS_CHROOT, "
        "SETFCAP, MKNOD, RuntimeDefault seccomp, Unconfined AppArmor, Kubernetes 1.30+ "
        "(docs/kubernetes.md, step 6).",
    )
    arm_variant_label: str = Field(
        DEFAULT_ARM_VARIANT_LABEL,
        description="Node label carrying the ARM variant (v6/v7); Kubernetes has none.",
    )
    placements: dict[str, PlatformPlacement] = Field(
        default_factory=dict,
        description="Per-platform extra nodeSelector, tolerations and resources, "
        "keyed by platform (linux/arm/v7).",
    )
    unschedulable_grace_s: Annotated[int, Cli("--unschedulable-grace")] = Field(
        60, ge=0, description="How long a pod may stay unschedulable while nodes of its "
        "architecture exist but have no room (none exists: 15 s; a scale-up under way: "
        "until timeout_s)."
    )
    node_lost_toleration_s: int = Field(
        60, ge=1,
        description="How long a build or publish pod stays bound to a node that stopped "
        "reporting (NotReady, unreachable) before Kubernetes deletes it and the build is "
        "retried on another node; Kubernetes' default is 300.",
    )
    ttl_after_finished_s: int = Field(
        3600, ge=0, description="Backstop: Kubernetes deletes finished Jobs after this."
    )
    kubeconfig: str | None = Field(
        None, description="Path of a kubeconfig; default: in-cluster, then ~/.kube/config."
    )
    kube_context: str | None = Field(None, description="Context in the kubeconfig.")
    credentials_block: str | None = Field(
        None, description="Name of a prefect-kubernetes KubernetesCredentials block."
    )

    @field_validator("namespace", "shared_claim")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL_RE.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid Kubernetes name (lowercase DNS label)")
        return value

    @field_validator("registry_secret", "pull_secret", "git_credentials_secret",
                     "signing_key_secret", "registry_ca_configmap")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and (not DNS_LABEL_RE.match(value) or len(value) > 63):
            raise ValueError(f"{value!r} is not a valid Secret or ConfigMap name")
        return value

    @field_validator("build_secrets")
    @classmethod
    def _build_secret_refs(cls, value: dict[str, str]) -> dict[str, str]:
        for secret_id, ref in value.items():
            name, _, key = ref.partition("/")
            if not SECRET_ID_RE.match(secret_id):
                raise ValueError(f"secret id {secret_id!r} is invalid: up to 63 letters, "
                                 "digits, _ . - starting with a letter or digit")
            if not DNS_LABEL_RE.match(name) or len(name) > 63:
                raise ValueError(f"{secret_id}={ref}: {name!r} is not a valid Secret name: "
                                 "write ID=SECRET[/KEY]")
            if key and not SECRET_KEY_RE.match(key):
                raise ValueError(f"{secret_id}={ref}: {key!r} is not a valid Secret key "
                                 "(letters, digits, - _ .)")
        return value

    @field_validator("placements")
    @classmethod
    def _known_platforms(cls, value: dict[str, PlatformPlacement]) -> dict[str, PlatformPlacement]:
        return {str(Platform.parse(key)): placement for key, placement in value.items()}

    def placement(self, platform: Platform) -> PlatformPlacement:
        return self.placements.get(str(platform), PlatformPlacement())
