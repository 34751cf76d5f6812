"""`rebuild-fleet`: rebuild a catalog of images (images.yaml) in dependency order.

Composition only; the ordering and scheduling live in multiarch/fleet.py. Each image runs
`build-multiarch-image` as a subflow (rebuild: if-changed unless its entry says otherwise)
once every catalog image it is built FROM is done, at most `multiarch-fleet` (a Prefect
global concurrency limit) at once. A failed image fails only itself and the images built
FROM it; the run ends Failed naming them, with a table artifact of every image.
"""

from __future__ import annotations

import re
import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Failed, State

from flows.build import build_multiarch_image
from multiarch.catalog import CatalogEntry
from multiarch.fleet import (
    FleetFailed,
    FleetResult,
    ImageOutcome,
    failure_message,
    load_plan,
    run_plan,
    summary_line,
    table_rows,
)
from multiarch.runners import stop_all

FLEET_LIMIT = "multiarch-fleet"
# Without the global limit (a server `make serve` did not set up), the run caps itself.
UNLIMITED_FALLBACK = 2


def _stop_builds(*_: object) -> None:
    """Cancelled or crashed: every image's builds run in this process; stop them all."""
    stop_all()


@flow(name="rebuild-fleet", log_prints=True, on_cancellation=[_stop_builds],
      on_crashed=[_stop_builds])
def rebuild_fleet(catalog: str = "examples/fleet/images.yaml",
                  only_dependents_of: str | None = None) -> FleetResult | State:
    """Rebuild every image of a catalog in dependency order (a base before the images FROM it).

    Args:
        catalog: Path of the catalog (images.yaml), relative to the working directory (the
            repository root under the deployments).
        only_dependents_of: A repository (registry/repo) or image (registry/repo:tag): rebuild
            only the catalog images built FROM it, transitively (the event trigger's use).
    """
    log = get_run_logger()
    plan = load_plan(catalog, only_dependents_of=only_dependents_of)
    if not plan.order:
        log.info(f"catalog {catalog}: no image is built FROM {only_dependents_of}; "
                 "nothing to do")
        return Completed(message="nothing to do", data=FleetResult(
            catalog=catalog, only_dependents_of=only_dependents_of, images=[]))
    log.info(f"catalog {catalog}: order {' -> '.join(plan.order)}")
    limited = global_limit_exists(FLEET_LIMIT)
    if not limited:
        log.warning(f"no global concurrency limit {FLEET_LIMIT!r} on this server: running at "
                    f"most {UNLIMITED_FALLBACK} images at once (`make serve` creates it; "
                    f"FLEET_LIMIT=N sets it)")

    def run_one(entry: CatalogEntry) -> ImageOutcome:
        if not limited:
            return run_image(entry)
        with concurrency(FLEET_LIMIT, occupy=1):
            return run_image(entry)

    outcomes = run_plan(plan, run_one,
                        max_threads=16 if limited else UNLIMITED_FALLBACK)
    result = FleetResult(catalog=catalog, only_dependents_of=only_dependents_of,
                         images=outcomes)
    create_table_artifact(key=artifact_key(plan.catalog.stem), table=table_rows(outcomes),
                          description=f"Fleet {catalog}: {summary_line(outcomes)}")
    log.info(f"fleet {catalog}: {summary_line(outcomes)}")
    message = failure_message(outcomes)
    if message is not None:
        return Failed(message=message, data=FleetFailed(message, result))
    return Completed(message=summary_line(outcomes), data=result)


def run_image(entry: CatalogEntry) -> ImageOutcome:
    """One image's subflow; its final state becomes the table's decision."""
    began = time.monotonic()
    state = build_multiarch_image(**entry.parameters, return_state=True)
    duration = round(time.monotonic() - began, 1)
    flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id \
        else None
    image = str(entry.request.image)
    if not state.is_completed():
        return ImageOutcome(name=entry.name, image=image, decision="failed",
                            message=state.message or state.name, duration_s=duration,
                            flow_run_id=flow_run_id)
    built = state.result()
    return ImageOutcome(name=entry.name, image=image,
                        decision="up to date" if built.up_to_date else "rebuilt",
                        digest=built.index_digest, duration_s=duration, flow_run_id=flow_run_id)


def global_limit_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return True


def artifact_key(stem: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes."""
    return "fleet-" + (re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-") or "catalog")
