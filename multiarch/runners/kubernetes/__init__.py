"""The Kubernetes runner: one Job per platform on a node of that architecture.

options (what a user sets), manifests (pure Job manifests), diagnostics (pure pod
verdicts), permissions (what the runner may do, listed once), client (API access, errors
and the preflight), ownership (the flow-run pod's Job as owner), attempt (one attempt's
Jobs: labels, sweeps, SIGTERM), watch (one Job followed to its end), logs (each step's
log streamed), runner (the Runner). Only client, permissions, ownership, attempt, watch,
logs and runner import the Kubernetes client, and nothing outside this package talks to
Kubernetes.
"""
