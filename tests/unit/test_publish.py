"""Tags all-or-nothing: record, write, put back on failure, and say where things stand.

The registry here is an in-memory one behind httpx's MockTransport (our client's boundary),
with distribution 2.8's rules: DELETE by tag is refused, DELETE by digest untags every tag
holding it. The real registry behind a fault proxy is exercised by tests/faults.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from multiarch.errors import PublishError
from multiarch.publish import describe, write_tags
from multiarch.references import ImageReference
from multiarch.registry_api import Manifest, RegistryClient

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
IMAGE = ImageReference.model_validate("reg.example/team/app")


def manifest(text: str) -> Manifest:
    body = text.encode()
    return Manifest(digest="sha256:" + hashlib.sha256(body).hexdigest(), media_type=INDEX_TYPE,
                    body=body)


OLD, NEW = manifest('{"old":1}'), manifest('{"new":2}')


class Registry:
    """Tags -> manifests; `refuse` maps a tag to the status every PUT of it gets."""

    def __init__(self, tags: dict[str, Manifest]) -> None:
        self.tags = dict(tags)
        self.by_digest = {m.digest: m for m in tags.values()}
        self.refuse: dict[str, int] = {}
        self.puts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        reference = request.url.path.rsplit("/", 1)[1]
        if request.method == "GET":
            found = self.by_digest.get(reference) or self.tags.get(reference)
            if found is None:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            return httpx.Response(200, content=found.body,
                                  headers={"Content-Type": found.media_type})
        if request.method == "DELETE":
            if not reference.startswith("sha256:"):
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.tags = {t: m for t, m in self.tags.items() if m.digest != reference}
            return httpx.Response(202)
        self.puts.append(reference)
        if reference in self.refuse:
            return httpx.Response(self.refuse[reference],
                                  json={"errors": [{"code": "UNAVAILABLE", "message": "busy"}]})
        stored = manifest(request.content.decode())
        self.tags[reference] = stored
        return httpx.Response(201)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr("multiarch.registry_api.RETRY_DELAYS_S", (0.0, 0.0, 0.0))


def client_for(registry: Registry) -> RegistryClient:
    client = RegistryClient(registry="reg.example", insecure=False, auth_files=[])
    client._http = httpx.Client(transport=httpx.MockTransport(registry))
    return client


def test_every_tag_moves_to_the_pushed_index():
    registry = Registry({"a": OLD})
    write_tags(client_for(registry), IMAGE, ["a", "b"], NEW, index_is_new=True,
               emit=lambda _: None)
    assert registry.tags == {"a": NEW, "b": NEW}


def test_a_tag_already_holding_the_index_is_not_written_again():
    registry = Registry({"a": NEW})
    write_tags(client_for(registry), IMAGE, ["a", "b"], NEW, index_is_new=False,
               emit=lambda _: None)
    assert registry.puts == ["b"]


def test_a_tag_that_cannot_be_written_puts_every_moved_tag_back():
    registry = Registry({"a": OLD, "b": OLD})
    registry.refuse["b"] = 503
    with pytest.raises(PublishError) as caught:
        write_tags(client_for(registry), IMAGE, ["new", "a", "b"], NEW, index_is_new=True,
                   emit=lambda _: None)
    assert registry.tags == {"a": OLD, "b": OLD}  # `new` untagged with the deleted index
    assert registry.puts.count("b") == 4  # retried, then given up
    assert str(caught.value) == (
        "tag reg.example/team/app:b could not be written: PUT reg.example/v2/team/app/"
        "manifests/b: 503 UNAVAILABLE: busy; every tag is back where it was: "
        f"new absent, a -> {OLD.digest}, b -> {OLD.digest}")


def test_a_new_tag_that_cannot_be_removed_safely_is_reported():
    registry = Registry({"a": OLD, "b": OLD, "keep": NEW})  # another tag holds the index
    registry.refuse["b"] = 400
    with pytest.raises(PublishError) as caught:
        write_tags(client_for(registry), IMAGE, ["new", "b"], NEW, index_is_new=False,
                   emit=lambda _: None)
    assert registry.tags["keep"] == NEW and registry.tags["b"] == OLD
    assert f"ROLLBACK INCOMPLETE: new tags new still hold {NEW.digest}" in str(caught.value)
    assert registry.puts.count("b") == 1  # a 400 is the registry's answer, not a hiccup


def test_what_tags_hold_reads_as_one_line():
    assert describe({"a": OLD, "b": None}) == f"a -> {OLD.digest}, b absent"
