"""examples/debian-app: a real-world Containerfile (apt-get install in a RUN step) builds
for amd64 and arm64 FROM the Debian 12 base, each platform with its own architecture's
binaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.busybox import ELF_MACHINES, elf_machine
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from multiarch.sbom import sbom_for_layout, sbom_packages
from tests.integration.conftest import REPO_ROOT, read_image_file, skopeo_raw

pytestmark = pytest.mark.integration


class _Quiet:
    def info(self, *args: object, **kwargs: object) -> None: ...
    def warning(self, *args: object, **kwargs: object) -> None: ...


def test_debian_app_builds_for_both_platforms(
    playground, debian_base: str, tmp_path: Path
) -> None:
    image = f"{playground.address}/examples/debian-app:latest"
    request = BuildRequest(
        image=image,
        platforms=("linux/amd64", "linux/arm64"),
        context=str(REPO_ROOT / "examples" / "debian-app"),
        build_args={"BASE": debian_base},
        allow_emulation=True,
        insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")),
    )
    result = build_and_publish(request, log=_Quiet())
    assert {str(p.platform) for p in result.platforms} == {"linux/amd64", "linux/arm64"}
    index = json.loads(skopeo_raw(image))
    repository = image.rsplit(":", 1)[0]
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        scratch = tmp_path / arch
        scratch.mkdir()
        jq = read_image_file(f"{repository}@{entry['digest']}", "/usr/bin/jq", scratch=scratch)
        assert elf_machine(jq[:20]) == ELF_MACHINES[arch], arch
        # read_image_file left the platform's layout (ref "pulled"): its SBOM names the
        # apt-installed jq at the version dpkg recorded in the image
        packages = sbom_packages(sbom_for_layout(
            scratch / "pulled", "pulled", name=repository, subject_digest=entry["digest"],
            created=datetime(2024, 1, 1, tzinfo=UTC)))
        (scratch / "dpkg").mkdir()
        status = read_image_file(f"{repository}@{entry['digest']}", "/var/lib/dpkg/status",
                                 scratch=scratch / "dpkg").decode()
        jq_entry = next(e for e in status.split("\n\n") if e.startswith("Package: jq\n"))
        version = next(line.split(": ", 1)[1] for line in jq_entry.splitlines()
                       if line.startswith("Version: "))
        assert packages["jq"] == version, arch
        assert "libjq1" in packages and "dpkg" in packages, arch
