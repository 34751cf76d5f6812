"""The catalog and the fleet's planning: what a user reads before and after a fleet run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from multiarch.catalog import Catalog, CatalogError, load_catalog, parse_catalog
from multiarch.events import failed_payload, published_payload, resource
from multiarch.fleet import (
    ImageOutcome,
    failure_message,
    plan_fleet,
    run_plan,
    table_rows,
)
from multiarch.request import BuildRequest
from multiarch.results import BuildResult, PlatformSummary

REG = "127.0.0.1:5000"


def contexts(tmp_path: Path, *names: str) -> None:
    for name in names:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "Containerfile").write_text("FROM scratch\n")


def catalog(tmp_path: Path, images: list[dict], defaults: dict | None = None) -> Catalog:
    contexts(tmp_path, *(str(i["context"]) for i in images
                         if isinstance(i, dict) and i.get("context") != "missing"))
    document = {"defaults": {"platforms": ["linux/amd64"], **(defaults or {})},
                "images": images}
    return parse_catalog(document, name="images.yaml", base_dir=tmp_path)


def entry(repo: str, **more: object) -> dict:
    return {"image": f"{REG}/fleet/{repo}:latest", "context": repo, **more}


def test_entries_merge_defaults_resolve_contexts_and_rebuild_if_changed(tmp_path):
    cat = catalog(tmp_path, [entry("base"), entry("app", name="the-app", rebuild="always",
                                                  build_args={"B": "2"})],
                  defaults={"build_args": {"A": "1"}})
    base, app = cat.entries
    assert base.name == "base"  # the repository's tail
    assert base.request.rebuild == "if-changed"
    assert app.name == "the-app" and app.request.rebuild == "always"
    assert app.request.build_args == {"A": "1", "B": "2"}
    assert base.request.context == str(tmp_path / "base")
    assert BuildRequest(**app.parameters) == app.request


@pytest.mark.parametrize(("images", "message"), [
    ([entry("a"), entry("b", platforms=["linux/sparc"])],
     "images.yaml: images[1] (b): platforms.0: "),
    ([entry("a", colour="red")], "images.yaml: images[0] (a): colour: Extra inputs"),
    ([entry("a"), entry("b", name="a")], "images.yaml: images[1] (a): name: already used by "
     "images[0]"),
    ([entry("a"), {**entry("b", name="b"), "image": f"{REG}/fleet/a:latest"}],
     "images.yaml: images[1] (b): image: 127.0.0.1:5000/fleet/a:latest is also published by "
     "images[0]"),
    ([entry("a"), {"image": f"{REG}/fleet/b", "context": "missing"}],
     "images.yaml: images[1] (b): context: '"),
])
def test_bad_entries_are_refused_naming_entry_and_field(tmp_path, images, message):
    with pytest.raises(CatalogError) as caught:
        catalog(tmp_path, images)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_top_level_key_and_unreadable_file(tmp_path):
    with pytest.raises(CatalogError, match=r"unknown top-level key.*imgs"):
        parse_catalog({"imgs": []}, name="images.yaml", base_dir=tmp_path)
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog(tmp_path / "nope.yaml")


def bases_of(**graph: str) -> dict[str, list[str]]:
    return {name: [f"{REG}/fleet/{b}:latest" for b in deps.split()] if deps else []
            for name, deps in graph.items()}


def test_order_puts_each_image_after_its_catalog_bases(tmp_path):
    cat = catalog(tmp_path, [entry("c"), entry("a"), entry("b"), entry("base"), entry("tool")])
    bases = bases_of(c="a", a="base", b="base", base="", tool="")
    bases["base"] = [f"{REG}/library/busybox:latest"]
    bases["tool"] = [f"{REG}/fleet/base:other-tag", "docker.io/library/alpine@sha256:" + "0" * 64]
    plan = plan_fleet(cat, read_bases=lambda e: bases[e.name])
    assert plan.graph == {"c": ["a"], "a": ["base"], "b": ["base"], "base": [], "tool": []}
    assert plan.order.index("base") < plan.order.index("a") < plan.order.index("c")
    assert plan.order.index("base") < plan.order.index("b")


def test_a_cycle_is_refused_naming_it(tmp_path):
    cat = catalog(tmp_path, [entry("x"), entry("a"), entry("b")])
    bases = bases_of(x="", a="b", b="a")
    with pytest.raises(CatalogError, match=r"^catalog cycle: a -> b -> a"):
        plan_fleet(cat, read_bases=lambda e: bases[e.name])


def test_only_dependents_of_selects_transitive_dependents(tmp_path):
    cat = catalog(tmp_path, [entry("base"), entry("a"), entry("b"), entry("c"), entry("tool")])
    bases = bases_of(base="", a="base", b="base", c="a", tool="")
    bases["base"] = [f"{REG}/library/busybox:latest"]
    bases["tool"] = [f"{REG}/library/busybox:1.36"]

    def selected(published: str) -> set[str]:
        order = plan_fleet(cat, only_dependents_of=published,
                           read_bases=lambda e: bases[e.name]).order
        if {"a", "c"} <= set(order):
            assert order.index("c") > order.index("a")
        return set(order)

    assert selected(f"{REG}/fleet/base") == {"a", "b", "c"}
    assert selected(f"{REG}/fleet/a:latest") == {"c"}
    assert selected(f"{REG}/fleet/a:v2") == set()
    assert selected(f"{REG}/library/busybox") == {"base", "tool", "a", "b", "c"}
    assert selected(f"{REG}/library/busybox:latest") == {"base", "a", "b", "c"}
    with pytest.raises(CatalogError, match="only_dependents_of: image 'busybox'"):
        selected("busybox")


def test_a_failure_skips_its_dependents_only_and_bases_finish_first(tmp_path):
    cat = catalog(tmp_path, [entry("base"), entry("a"), entry("b"), entry("c"), entry("tool")])
    bases = bases_of(base="", a="base", b="base", c="a", tool="")
    plan = plan_fleet(cat, read_bases=lambda e: bases[e.name])
    finished: list[str] = []
    lock = threading.Lock()

    def run_one(e):
        with lock:
            assert all(d in finished for d in plan.graph[e.name]), (e.name, finished)
        outcome = ImageOutcome(name=e.name, image=str(e.request.image),
                               decision="failed" if e.name == "a" else "rebuilt",
                               message="boom" if e.name == "a" else None)
        with lock:
            finished.append(e.name)
        return outcome

    outcomes = {o.name: o for o in run_plan(plan, run_one)}
    assert outcomes["a"].decision == "failed"
    assert outcomes["c"].decision == "skipped"
    assert outcomes["c"].message == "skipped because a failed"
    assert {outcomes[n].decision for n in ("base", "b", "tool")} == {"rebuilt"}
    assert "c" not in finished
    assert failure_message(list(outcomes.values())) == (
        "2 of 5 images not published; failed: a; skipped because a base failed: c")


def test_table_rows_read_like_the_decisions():
    rows = table_rows([
        ImageOutcome(name="base", image=f"{REG}/fleet/base:latest", decision="rebuilt",
                     digest="sha256:aa", duration_s=12.34),
        ImageOutcome(name="tool", image=f"{REG}/fleet/tool:latest", decision="up to date",
                     digest="sha256:bb", duration_s=1.0),
        ImageOutcome(name="a", image=f"{REG}/fleet/a:latest", decision="failed",
                     message="1 of 2 platforms failed\nmore", duration_s=3),
        ImageOutcome(name="c", image=f"{REG}/fleet/c:latest", decision="skipped",
                     message="skipped because a failed", because="a"),
    ])
    assert [(r["image"], r["decision"], r["digest"], r["duration"]) for r in rows] == [
        ("base", "rebuilt", "sha256:aa", "12.3 s"),
        ("tool", "up to date", "sha256:bb", "1.0 s"),
        ("a", "failed: 1 of 2 platforms failed", "-", "3.0 s"),
        ("c", "skipped: a failed", "-", "-"),
    ]
    assert failure_message([ImageOutcome(name="x", image="r/x", decision="up to date")]) is None


def test_event_resource_and_payloads(tmp_path):
    contexts(tmp_path, "ctx")
    request = BuildRequest(image=f"{REG}/fleet/base:latest", context=str(tmp_path / "ctx"),
                           platforms=("linux/amd64", "linux/arm64"))
    assert resource(request, subflow=False) == {
        "prefect.resource.id": f"multiarch.repository.{REG}/fleet/base",
        "prefect.resource.name": f"{REG}/fleet/base",
        "multiarch.repository": f"{REG}/fleet/base",
        "multiarch.subflow": "false",
    }
    result = BuildResult(image=f"{REG}/fleet/base", index_digest="sha256:ab", tags=["latest"],
                         platforms=[PlatformSummary(platform="linux/amd64", digest="sha256:cd",
                                                    size=1, emulated=False, duration_s=1)])
    assert published_payload(result, source_revision="abc") == {
        "index_digest": "sha256:ab", "tags": ["latest"], "platforms": ["linux/amd64"],
        "left_out": [], "source_revision": "abc"}
    from multiarch.partial import PlatformsFailed

    payload = failed_payload(request, PlatformsFailed(
        "1 of 2 platforms failed, nothing was published: linux/arm64: RUN exited 1",
        platforms=["linux/arm64"]))
    assert payload["failed_platforms"] == ["linux/arm64"]
    assert payload["reason"].startswith("1 of 2 platforms failed")


def test_the_example_catalog_orders_as_documented():
    from multiarch.fleet import load_plan

    plan = load_plan(str(Path(__file__).parents[2] / "examples" / "fleet" / "images.yaml"))
    assert plan.graph == {"app-c": ["app-a"], "app-a": ["base"], "app-b": ["base"],
                          "base": [], "tool": []}
    assert plan.order.index("base") < plan.order.index("app-a") < plan.order.index("app-c")
    assert all(e.request.rebuild == "if-changed" for e in plan.catalog.entries)
    again = load_plan(str(Path(__file__).parents[2] / "examples" / "fleet" / "images.yaml"),
                      only_dependents_of="127.0.0.1:5000/library/busybox")
    assert set(again.order) == {"base", "app-a", "app-b", "app-c"}  # tool: FROM scratch


def test_a_failed_fleet_keeps_every_outcome_through_pickling():
    """A Failed run's data must be an exception (Prefect raises it to whoever awaits the
    run); it still carries each image's outcome, also once persisted."""
    import pickle

    from multiarch.fleet import FleetFailed, FleetResult, ImageOutcome

    result = FleetResult(catalog="images.yaml", images=[
        ImageOutcome(name="tool", image=f"{REG}/fleet/tool:latest", decision="failed",
                     duration_s=1.0, message="RUN exited 1")])
    failed = pickle.loads(pickle.dumps(FleetFailed("1 of 1 images not published", result)))
    assert isinstance(failed, Exception)
    assert str(failed) == "1 of 1 images not published"
    assert failed.result == result
