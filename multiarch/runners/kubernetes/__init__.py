"""The Kubernetes runner: one Job per platform on a node of that architecture.

What a user sets and what is created: options, manifests (pure Job manifests),
permissions (what the runner may do, listed once), ownership (the flow-run pod's Job as
owner), attempt (one attempt's Jobs: labels, sweeps, SIGTERM).
Talking to the cluster: client (API access, errors, the preflight), reflector (list +
watch with relist on 410 and backoff, one thread per kind), backoff (exponential, full
jitter, Retry-After), follower (one Job, its pods and their events followed to a
verdict), watch (`run_job`: create, follow, always delete), logs (each step's log
streamed), runner (the Runner).
Pure rules, tested on plain dicts: diagnostics (a pod's verdict), events (Job conditions
and Warning events), nodes (a lost node, an emulating node), scheduling (how long an
unschedulable pod may wait).
Nothing outside this package talks to Kubernetes.
"""
