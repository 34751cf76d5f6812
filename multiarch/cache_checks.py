"""Preflight for `cache: registry`: push access to each cache repository, and a note when
the Containerfile would defeat the cache.

Apart from `multiarch.cache` (names and flags, imported by the build plan) because these
checks read the Containerfile and talk to the registry, which the plan must not import.
"""

from __future__ import annotations

from pathlib import Path

from multiarch.cache import cache_repositories
from multiarch.containerfile import instructions
from multiarch.errors import ConfigurationError, TransientError
from multiarch.rebuild import read_containerfile
from multiarch.registry_api import check_push_access
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource

LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})


def args_that_stop_the_cache(text: str) -> list[str]:
    """Stage ARGs followed by a layer step: the registry cache ends there (buildah 1.28).

    buildah 1.28 does not look an ARG step up in the `--cache-from` repository
    (containers/buildah#4315, fixed in 1.29), and after one miss it looks nothing up: every
    RUN, COPY and ADD below such an ARG runs again on a node that starts empty. Global ARGs
    (before the first FROM) are not steps and do no harm.
    """
    found: list[str] = []
    stage_args: list[str] = []
    in_stage = False
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            in_stage, stage_args = True, []
        elif keyword == "ARG" and in_stage:
            stage_args.append(rest.partition("=")[0].strip())
        elif keyword in LAYER_STEPS and stage_args:
            found += [name for name in stage_args if name not in found]
            stage_args = []
    return found


def check_cache_use(request: BuildRequest, source: PinnedSource | None) -> list[str]:
    """A note when the Containerfile would defeat the cache; silent when it cannot tell."""
    if request.cache != "registry":
        return []
    if source is None:
        if request.is_git:
            return []
        source = PinnedSource(kind="local", location=str(Path(request.context).resolve()))
    names = args_that_stop_the_cache(read_containerfile(request, source))
    if not names:
        return []
    return [f"cache: ARG {', '.join(names)} inside a stage: buildah 1.28 reuses no cached "
            "layer after it (containers/buildah#4315, fixed in 1.29), so the steps below it "
            "run on every build: declare it as late as possible (just before the step that "
            "needs it), or pass the value in a file"]


def check_cache_access(request: BuildRequest) -> list[str]:
    """Each cache repository accepts a push from here, before any build runs.

    The same rule as the image's own check: binding for the local runner; for Kubernetes
    (pods push with their Secret, maybe to a registry only the cluster reaches) a note.
    """
    notes = []
    for repository in cache_repositories(request):
        try:
            check_push_access(repository, request.insecure_registry)
        except ConfigurationError as exc:
            if request.runner.kind != "local":
                notes.append(f"cache: {repository.name} not checked from this machine: {exc}")
                continue
            raise ConfigurationError(
                f"cache: {exc} for the cache repository {repository.name} (cache: registry "
                "needs push access next to the image; or set cache: none)"
            ) from exc
        except TransientError as exc:
            notes.append(f"cache: push check of {repository.name} passed over a transient "
                         f"failure: {exc}")
            continue
        notes.append(f"cache: {repository.registry} accepts a push to {repository.repository}")
    return notes
