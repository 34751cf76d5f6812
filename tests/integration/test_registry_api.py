"""The push check against the real registry, directly and behind the fault proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from multiarch.errors import ConfigurationError, TransientError
from multiarch.registry_api import check_push_access
from tests.faults.fault_proxy import Answer, FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(playground) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(upstream=playground.address).start()
    yield fault_proxy
    fault_proxy.stop()


def test_a_registry_that_accepts_pushes_passes_and_keeps_no_upload(proxy):
    check_push_access(f"{proxy.address}/team/app:1", insecure=True)
    assert [line.split(" -> ")[1] for line in proxy.seen] == ["202", "204"]  # opened, cancelled


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_push_is_a_configuration_error_naming_registry_and_answer(proxy, status):
    proxy.add("POST", r"/blobs/uploads/$", Answer(status, "denied by policy"))
    with pytest.raises(ConfigurationError) as caught:
        check_push_access(f"{proxy.address}/team/app:1", insecure=True)
    message = str(caught.value)
    assert message.startswith(f"registry {proxy.address} refused a push: ")
    assert f"{status} UNKNOWN: denied by policy" in message and "\n" not in message


def test_a_503_from_the_registry_is_transient(proxy):
    proxy.add("POST", r"/blobs/uploads/$", Answer(503))
    with pytest.raises(TransientError, match="503 UNAVAILABLE"):
        check_push_access(f"{proxy.address}/team/app:1", insecure=True)
