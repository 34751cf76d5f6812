"""Rebuild a catalog of images in dependency order: plan, schedule, report.

The flow (flows/fleet.py) only supplies how one image runs (a `build-multiarch-image`
subflow under a global concurrency limit). Here: which entries run, in which order, which
may run together (an image starts only once every catalog image it is built FROM has been
published or found up to date), and what the table says. A failed image fails only itself;
the images built FROM it, transitively, are skipped and never start.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from multiarch.catalog import (
    Catalog,
    CatalogEntry,
    build_order,
    dependencies,
    dependents_of,
    load_catalog,
)
from multiarch.containerfile import base_images
from multiarch.errors import MultiarchError
from multiarch.rebuild import read_containerfile
from multiarch.source import PinnedSource, pin_source

DecisionText = Literal["up to date", "rebuilt", "failed", "skipped"]
OK_DECISIONS = ("up to date", "rebuilt")


class ImageOutcome(BaseModel):
    """One row of the fleet's table and result."""

    model_config = ConfigDict(frozen=True)

    name: str
    image: str
    decision: DecisionText
    digest: str | None = None
    duration_s: float = 0.0
    message: str | None = None  # why it failed or was skipped
    flow_run_id: str | None = None  # the image's build-multiarch-image subflow run
    because: str | None = None  # skipped: the failed catalog image it is built FROM


class FleetResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    catalog: str
    only_dependents_of: str | None = None
    images: list[ImageOutcome]


class FleetFailed(MultiarchError):
    """Some images did not publish. The fleet run ends Failed with this as its result, so
    the outcome of every image stays readable (`result`); a Failed state's data must be an
    exception for Prefect to raise it where the run is awaited."""

    def __init__(self, message: str, result: FleetResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[type[FleetFailed], tuple[str, FleetResult]]:
        return (FleetFailed, (str(self), self.result))


@dataclass(frozen=True, kw_only=True)
class FleetPlan:
    catalog: Catalog
    graph: Mapping[str, list[str]]  # entry -> catalog entries it is built FROM
    order: list[str]  # the selected entries, each after its bases


def entry_bases(entry: CatalogEntry) -> list[str]:
    """The images the entry's Containerfile is built FROM, its build args substituted.

    A local context is read in place; a git context is pinned (git ls-remote) and its
    Containerfile read at that commit with a blobless clone (multiarch.rebuild). The
    subflow pins again: a ref that moves in between can only add an edge we did not see,
    never build from a different file than the one it reads itself.
    """
    request = entry.request
    if request.is_git:
        source = pin_source(request)
    else:
        source = PinnedSource(kind="local", location=str(Path(request.context).resolve()))
    return base_images(read_containerfile(request, source), request.build_args)


def plan_fleet(catalog: Catalog, *, only_dependents_of: str | None = None,
               read_bases: Callable[[CatalogEntry], list[str]] = entry_bases) -> FleetPlan:
    """Order the catalog (a cycle raises CatalogError before anything builds) and select
    what runs: everything, or only the dependents of a published image."""
    bases = {entry.name: read_bases(entry) for entry in catalog.entries}
    graph = dependencies(catalog, bases)
    order = build_order(graph)
    if only_dependents_of:
        selected = set(dependents_of(catalog, graph, bases, only_dependents_of))
        order = [name for name in order if name in selected]
    return FleetPlan(catalog=catalog, graph=graph, order=order)


def load_plan(path: str, *, only_dependents_of: str | None = None) -> FleetPlan:
    return plan_fleet(load_catalog(path), only_dependents_of=only_dependents_of)


def run_plan(plan: FleetPlan, run_one: Callable[[CatalogEntry], ImageOutcome], *,
             max_threads: int = 16) -> list[ImageOutcome]:
    """Run every selected entry once its selected bases are done, in threads (each thread
    carries the caller's context, so Prefect sees a subflow of the running flow).

    Bases outside the selection (`only_dependents_of`) count as done. The concurrency cap
    that matters is the caller's (a Prefect global limit inside `run_one`); `max_threads`
    only bounds the threads waiting on it. Outcomes come back in plan order.
    """
    selected = set(plan.order)
    outcomes: dict[str, ImageOutcome] = {}
    running: dict[Future[ImageOutcome], str] = {}

    def blocked_by(name: str) -> str | None:
        for base in plan.graph[name]:
            if base in selected and base in outcomes and \
                    outcomes[base].decision not in OK_DECISIONS:
                return base
        return None

    def ready(name: str) -> bool:
        return all(base not in selected or base in outcomes for base in plan.graph[name])

    with ThreadPoolExecutor(max_workers=max(1, min(max_threads, len(plan.order))),
                            thread_name_prefix="fleet") as pool:
        while len(outcomes) < len(plan.order):
            started = set(running.values())
            for name in plan.order:
                if name in outcomes or name in started or not ready(name):
                    continue
                failed_base = blocked_by(name)
                if failed_base is not None:
                    outcomes[name] = skipped(plan.catalog.entry(name), outcomes[failed_base])
                    continue
                context = contextvars.copy_context()
                future = pool.submit(context.run, _timed, run_one, plan.catalog.entry(name))
                running[future] = name
            if not running:
                continue  # skips may have made more entries ready
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                outcomes[name] = future.result()
    return [outcomes[name] for name in plan.order]


def _timed(run_one: Callable[[CatalogEntry], ImageOutcome], entry: CatalogEntry
           ) -> ImageOutcome:
    began = time.monotonic()
    try:
        outcome = run_one(entry)
    except Exception as exc:  # one image's failure must not stop the fleet
        outcome = ImageOutcome(name=entry.name, image=str(entry.request.image),
                               decision="failed", message=f"{type(exc).__name__}: {exc}")
    if not outcome.duration_s:
        outcome = outcome.model_copy(update={"duration_s": round(time.monotonic() - began, 1)})
    return outcome


def skipped(entry: CatalogEntry, base: ImageOutcome) -> ImageOutcome:
    """Never started: `base` failed, or was itself skipped (then its failed root is named)."""
    root = base.because if base.decision == "skipped" and base.because else base.name
    return ImageOutcome(name=entry.name, image=str(entry.request.image), decision="skipped",
                        message=f"skipped because {root} failed", because=root)


def table_rows(outcomes: list[ImageOutcome]) -> list[dict[str, str]]:
    """The artifact's rows: what a user scans after a nightly run."""
    rows = []
    for outcome in outcomes:
        decision = outcome.decision
        if decision == "skipped":
            decision = (outcome.message or "skipped").replace("skipped because", "skipped:")
        elif decision == "failed" and outcome.message:
            decision = f"failed: {outcome.message.splitlines()[0][:200]}"
        rows.append({
            "image": outcome.name,
            "reference": outcome.image,
            "decision": decision,
            "digest": outcome.digest or "-",
            "duration": f"{outcome.duration_s:.1f} s" if outcome.decision != "skipped" else "-",
        })
    return rows


def failure_message(outcomes: list[ImageOutcome]) -> str | None:
    """The fleet run's final message when something did not publish, else None."""
    failed = [o.name for o in outcomes if o.decision == "failed"]
    skipped_names = [o.name for o in outcomes if o.decision == "skipped"]
    if not failed and not skipped_names:
        return None
    parts = []
    if failed:
        parts.append(f"failed: {', '.join(failed)}")
    if skipped_names:
        parts.append(f"skipped because a base failed: {', '.join(skipped_names)}")
    return f"{len(failed) + len(skipped_names)} of {len(outcomes)} images not published; " \
        + "; ".join(parts)


def summary_line(outcomes: list[ImageOutcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.decision] = counts.get(outcome.decision, 0) + 1
    return ", ".join(f"{n} {d}" for d, n in counts.items()) or "nothing to do"
