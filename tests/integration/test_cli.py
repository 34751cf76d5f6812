"""`multiarch build` as a user runs it: a subprocess, JSON out, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.integration.conftest import EXAMPLE_HELLO, tag_digest

pytestmark = pytest.mark.integration


def multiarch(*args: str, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def test_build_prints_one_json_object_matching_the_registry(playground, prefect_server, tmp_path):
    image = f"{playground.address}/tests/cli"
    done = multiarch(
        "build",
        "--image",
        f"{image}:1.0",
        "--tag",
        "stable",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "--context",
        str(EXAMPLE_HELLO),
        "--build-arg",
        f"BASE={playground.base}",
        "--label",
        "org.example.team=platform",
        "--allow-emulation",
        "--insecure-registry",
        "--work-dir",
        str(tmp_path),
        "--json",
        api_url=prefect_server,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert set(result) == {"image", "index_digest", "tags", "platforms", "up_to_date",
                           "attestations", "signed_by", "left_out"}
    assert result["left_out"] == []
    assert result["up_to_date"] is False
    # SBOM and provenance by default, no signature without a key
    assert sorted((a["subject"], a["kind"]) for a in result["attestations"]) == [
        ("linux/amd64", "provenance"), ("linux/amd64", "sbom"),
        ("linux/arm64", "provenance"), ("linux/arm64", "sbom")]
    assert result["signed_by"] is None
    assert result["image"] == image
    assert result["tags"] == ["1.0", "stable"]
    assert [p["platform"] for p in result["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert [p["emulated"] for p in result["platforms"]] == [False, True]
    for entry in result["platforms"]:
        assert set(entry) == {"platform", "digest", "size", "emulated", "duration_s",
                              "builder"}
        assert entry["size"] > 0
        assert re.fullmatch(r"buildah \d+\.\d+\.\d+, skopeo \d+\.\d+\.\d+", entry["builder"])
    assert tag_digest(f"{image}:1.0") == result["index_digest"]
    assert tag_digest(f"{image}:stable") == result["index_digest"]


@pytest.mark.parametrize(
    ("args", "field", "hint"),
    [
        (["--platform", "linux/sparc"], "platforms.0", "use one of"),
        (["--platform", "windows/amd64"], "platforms.0", "linux"),
        (["--platform", "linux/amd64", "--image", "hello:latest"], "image", "registry"),
        (["--platform", "linux/amd64", "--tag=-bad"], "tags", "invalid"),
        (["--platform", "linux/amd64", "--context", "/does/not/exist"], "context", "git URL"),
        (["--platform", "linux/amd64", "--optional-platform", "linux/arm64"],
         "optional_platforms", "add it to platforms"),
    ],
)
def test_bad_input_fails_at_once_naming_the_field(args, field, hint):
    base = ["build", "--image", "127.0.0.1:5000/x/y:z", "--context", str(EXAMPLE_HELLO)]
    done = multiarch(*base, *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{field}:" in lines[0]
    assert hint in lines[0]
    assert done.stdout == ""


def test_foreign_platform_without_emulation_fails_before_building(prefect_server, tmp_path):
    done = multiarch(
        "build",
        "--image",
        "127.0.0.1:5000/tests/never:latest",
        "--platform",
        "linux/arm64",
        "--context",
        str(EXAMPLE_HELLO),
        "--work-dir",
        str(tmp_path),
        api_url=prefect_server,
    )
    assert done.returncode != 0
    reasons = [line for line in done.stderr.splitlines() if line.startswith("multiarch: ")]
    assert len(reasons) == 1, done.stderr[-3000:]
    assert "linux/arm64 cannot run natively" in reasons[0]
    assert "--allow-emulation" in reasons[0]
    assert not (tmp_path / "shared").exists(), "a build started"
