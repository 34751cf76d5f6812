"""What the runner may do in its namespace: listed once, granted by the shipped Role
(deployments/kubernetes/rbac.yaml, checked against this list by a unit test), and asked of
the API server before any Job is created.

A permission missing at run time used to surface as a 403 in the middle of a build, or
not at all (a swallowed 403 turned a Job deadline into "exited with 143"). Asking first,
with one SelfSubjectAccessReview per permission (which every authenticated user may
create), names every missing permission in one message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from multiarch.errors import ConfigurationError

REVIEW_TIMEOUT_S = 30


@dataclass(frozen=True, order=True)
class Permission:
    """One verb on one resource of the runner's namespace, as RBAC spells it."""

    verb: str
    group: str  # "" is the core group
    resource: str
    subresource: str = ""

    @property
    def rbac_resource(self) -> str:
        """How a Role rule names it: `pods/log`."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        group = f"{self.group}/" if self.group else ""
        return f"{self.verb} {group}{self.rbac_resource}"


def _verbs(group: str, resource: str, *verbs: str, subresource: str = "") -> list[Permission]:
    return [Permission(verb, group, resource, subresource) for verb in verbs]


REQUIRED: tuple[Permission, ...] = (
    # Build and publish Jobs: created, followed (Job conditions), deleted one by one when
    # done and by label (deletecollection) in the sweeps of a previous or a stopped attempt.
    *_verbs("batch", "jobs", "create", "get", "list", "watch", "delete", "deletecollection"),
    # Their pods, diagnosed; `get` also reads the flow-run pod itself (its owner Job).
    *_verbs("", "pods", "get", "list", "watch"),
    # Every step's output, streamed into the task log.
    *_verbs("", "pods", "get", subresource="log"),
    # FailedCreate, FailedMount, FailedScheduling and the like come only as events.
    *_verbs("", "events", "list", "watch"),
)


# Cluster-scoped, from the ClusterRole multiarch-builder-nodes: the Node a build ran on
# says whether it runs containers under emulation (annotation multiarch.dev/emulated) and
# whether it is Ready. Optional: without it `emulated` reads false and a lost node is seen
# from its pods alone, so the preflight says so and goes on.
NODE_READ: tuple[Permission, ...] = (Permission("get", "", "nodes"),)


def granted_by_rules(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    """The permissions a Role's rules give (no wildcards: the shipped Role names each)."""
    granted: set[Permission] = set()
    for rule in rules:
        for group in rule.get("apiGroups") or []:
            for name in rule.get("resources") or []:
                resource, _, subresource = name.partition("/")
                granted.update(Permission(verb, group, resource, subresource)
                               for verb in rule.get("verbs") or [])
    return granted


class AccessReviews(Protocol):
    """The part of `AuthorizationV1Api` used here."""

    def create_self_subject_access_review(self, body: client.V1SelfSubjectAccessReview,
                                          **kwargs: Any) -> Any: ...


def review(permission: Permission, namespace: str) -> client.V1SelfSubjectAccessReview:
    return client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(
            namespace=namespace or None, verb=permission.verb, group=permission.group,
            resource=permission.resource, subresource=permission.subresource or None,
        )))


def missing_permissions(reviews: AccessReviews, namespace: str,
                        required: Iterable[Permission] = REQUIRED) -> list[Permission]:
    """Ask the API server about each permission; API errors propagate to the caller."""
    missing = []
    for permission in required:
        answer = reviews.create_self_subject_access_review(
            review(permission, namespace), _request_timeout=REVIEW_TIMEOUT_S)
        if not (answer.status is not None and answer.status.allowed):
            missing.append(permission)
    return missing


def require_permissions(reviews: AccessReviews, namespace: str) -> None:
    """Raise one ConfigurationError naming every missing permission, with the fix."""
    missing = missing_permissions(reviews, namespace)
    if missing:
        raise ConfigurationError(
            f"the runner's Kubernetes identity lacks {len(missing)} permission(s) in "
            f"namespace {namespace}: {', '.join(map(str, missing))}: apply "
            "deployments/kubernetes (Role multiarch-builder, bound to the flow-run pod's "
            "service account) or grant exactly these to the identity the runner uses"
        )
