"""Classifying a failed by-digest push by skopeo's own error line (real captured output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multiarch.errors import PublishError, StepFailed, TransientStepFailure
from multiarch.ocispec import sha256_digest as manifest_digest
from multiarch.registry import check_served, skopeo_error_line, skopeo_failure

CAPTURED = Path(__file__).parent / "captured"


def failed_push(name: str) -> StepFailed:
    tail = (CAPTURED / f"{name}.txt").read_text().splitlines()[-20:]
    return StepFailed("push exited 1", step="push", exit_code=1, tail=tail)


@pytest.mark.parametrize(
    ("captured", "kind", "says"),
    [
        ("skopeo-push-503", TransientStepFailure, "503 (Service Unavailable)"),
        ("skopeo-push-502", TransientStepFailure, "502"),
        ("skopeo-push-504", TransientStepFailure, "504"),
        ("skopeo-push-reset", TransientStepFailure, "connection reset by peer"),
        ("skopeo-push-401", StepFailed, "unauthorized: authentication required"),
        ("skopeo-push-403", StepFailed, "403"),
    ],
)
def test_a_push_failure_is_classified_by_skopeos_error_line(captured, kind, says):
    error = skopeo_failure(failed_push(captured), label="[publish]",
                           destination="reg/app@sha256:0")
    assert type(error) is kind
    assert says in str(error)
    assert "\n" not in str(error)
    assert str(error).startswith("[publish] pushing reg/app@sha256:0 failed (exit 1): ")


def test_a_connection_dropped_while_skopeo_writes_a_blob_is_transient():
    # skopeo 1.9.3's last line when the proxy reset the connection 32 KiB into a PATCH
    line = ('time="2026-11-29T02:40:11Z" level=fatal msg="copying image 1/1 from manifest list: '
            'writing blob: Patch \\"http://127.0.0.1:35187/v2/faults/reset/blobs/uploads/1?_state=x'
            '\\": readfrom tcp 127.0.0.1:52304->127.0.0.1:35187: write tcp 127.0.0.1:52304->'
            '127.0.0.1:35187: use of closed network connection"')
    failed = StepFailed("push exited 1", step="push", exit_code=1, tail=["Copying blob x", line])
    error = skopeo_failure(failed, label="[publish]", destination="r/app@sha256:0")
    assert type(error) is TransientStepFailure
    assert str(error).endswith("use of closed network connection")


def test_the_error_line_is_the_fatal_one_not_an_earlier_retry_warning():
    tail = [
        'time="x" level=warning msg="Failed, retrying in 1s ... (1/3). Error: 503"',
        "Copying blob sha256:1",
        'time="y" level=fatal msg="writing manifest: Get \\"http://r/v2/\\": unauthorized"',
    ]
    assert skopeo_error_line(tail) == 'writing manifest: Get "http://r/v2/": unauthorized'
    assert skopeo_error_line(["just this"]) == "just this"
    assert skopeo_error_line([]) == "no output"


INDEX = json.dumps({"schemaVersion": 2, "manifests": [{"digest": "sha256:a"},
                                                      {"digest": "sha256:b"}]}).encode()


def test_a_tag_serving_the_computed_index_passes():
    index = check_served("r/app:1", INDEX, expected_digest=manifest_digest(INDEX),
                         expected_manifests={"linux/amd64": "sha256:a", "linux/arm64": "sha256:b"})
    assert len(index["manifests"]) == 2


@pytest.mark.parametrize(
    ("served", "expected", "says"),
    [
        (None, {}, "does not exist after the push"),
        (b'{"manifests":[]}', {}, "another push raced this one"),
        (INDEX, {"linux/arm64": "sha256:c"}, "lacks platforms linux/arm64"),
    ],
)
def test_a_tag_serving_anything_else_fails(served, expected, says):
    wanted = manifest_digest(INDEX) if says != "another push raced this one" else "sha256:0"
    with pytest.raises(PublishError, match=says):
        check_served("r/app:1", served, expected_digest=wanted, expected_manifests=expected)
