"""`image_format: docker`: HEALTHCHECK, ONBUILD and SHELL, which only Docker's image config
has, survive the build, the handoff (shared layouts and the registry) and publish, on both
platforms, with SBOM and provenance; crane and `multiarch verify` accept the result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from multiarch.cli import main as cli_main
from multiarch.orchestrate import build_and_publish
from multiarch.request import BuildRequest, RunnerOptions
from tests.integration.conftest import file_in_dir_copy

pytestmark = pytest.mark.integration

SHELL = ["/bin/env", "MARK=from-shell", "/bin/sh", "-c"]
CONTAINERFILE = f"""\
ARG BASE
FROM ${{BASE}}
SHELL {json.dumps(SHELL)}
RUN echo "$MARK" > /mark
HEALTHCHECK --interval=30s CMD ["/bin/true"]
ONBUILD RUN echo child
"""


class _Quiet:
    def info(self, msg: str, /) -> None:
        pass


def skopeo_raw(reference: str, *extra: str) -> dict:
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra,
                           f"docker://{reference}"], capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout)


def image_file(reference: str, path: str, scratch: Path) -> bytes:
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{reference}", f"dir:{scratch}"], check=True, timeout=120,
                   capture_output=True)
    return file_in_dir_copy(scratch, path)


@pytest.mark.parametrize("handoff", ["shared", "registry"])
def test_docker_config_fields_survive_handoff_and_publish(playground, tmp_path, crane,
                                                          handoff):
    context = tmp_path / "app"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    repository = f"{playground.address}/tests/docker-format-{handoff}"
    result = build_and_publish(BuildRequest(
        image=f"{repository}:1", platforms=["linux/amd64", "linux/arm64"],
        context=str(context), build_args={"BASE": playground.base}, allow_emulation=True,
        insecure_registry=True, image_format="docker", handoff=handoff,
        runner=RunnerOptions(work_dir=str(tmp_path / "work"))), log=_Quiet())
    index = skopeo_raw(f"{repository}:1")
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert len(result.platforms) == 2
    for platform in result.platforms:
        reference = f"{repository}@{platform.digest}"
        manifest = skopeo_raw(reference)
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        config = skopeo_raw(reference, "--config")["config"]
        assert config["Healthcheck"]["Test"] == ["CMD", "/bin/true"]
        assert config["Healthcheck"]["Interval"] == 30_000_000_000
        assert config["OnBuild"] == ["RUN echo child"]
        assert config["Shell"] == SHELL
        scratch = tmp_path / f"{handoff}-{platform.platform.architecture}"
        # the SHELL reached the RUN step after it
        assert image_file(reference, "/mark", scratch) == b"from-shell\n"
    done = subprocess.run([str(crane), "validate", "--insecure", "--remote", f"{repository}:1"],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert cli_main(["verify", f"{repository}:1", "--insecure-registry"]) == 0
    kinds = sorted(a.kind for a in result.attestations)
    assert kinds.count("sbom") == 2 and kinds.count("provenance") == 2, kinds


def test_an_oci_index_over_docker_images_is_refused_naming_the_fix(tmp_path):
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    with pytest.raises(ValueError, match="index_format: oci cannot hold the Docker image "
                       "manifests of image_format docker"):
        BuildRequest(image="127.0.0.1:5000/a/b:1", platforms=["linux/amd64"],
                     context=str(tmp_path), image_format="docker",
                     index_format="oci")
    assert BuildRequest(image="127.0.0.1:5000/a/b:1", platforms=["linux/amd64"],
                        context=str(tmp_path),
                        image_format="docker").index_format == "docker"
