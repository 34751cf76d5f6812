"""The Kubernetes runner: one Job per platform on a node of that architecture.

options (what a user sets), manifests (pure Job manifests), diagnostics (pure pod
verdicts), client (API access and errors), watch (one Job followed to its end), logs
(each step's log streamed), runner (the Runner). Only client, watch, logs and runner
import the Kubernetes client, and nothing outside this package talks to Kubernetes.
"""
