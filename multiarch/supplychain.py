"""The request's supply-chain options: SBOM, provenance and signing at publish.

SBOM and provenance are on by default: they need no key and cost seconds per platform.
Signing needs a key, so it is on only when one is named: a file or a Prefect Secret block
on the machine that publishes, or on Kubernetes a Secret mounted only into the publish
step (runner.kubernetes.signing_key_secret). The key itself is never a parameter.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from multiarch.containerfile import BUILD_ARG_NAME_RE
from multiarch.parameters import Cli


class SupplyChainOptions(BaseModel):
    """What publish attaches to each platform and signs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sbom: bool = Field(
        True, description="Attach an SPDX 2.3 SBOM of each platform image (made by syft from "
        "its files and package databases) as an OCI referrer of its manifest.")
    provenance: bool = Field(
        True, description="Attach SLSA v1 provenance of each platform (an in-toto statement: "
        "source revision, Containerfile digest, build args, bases by digest, runner, node "
        "architecture, emulation, times) as an OCI referrer of its manifest.")
    sign_key_file: str | None = Field(
        None, description="Armored GPG secret key file (without passphrase) that signs the "
        "index, every platform manifest and every attestation at publish; the publish then "
        "fails unless the signatures verify. Kubernetes: use "
        "runner.kubernetes.signing_key_secret instead.")
    sign_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding that armored key (never "
        "the key itself); local runner only.")
    secret_build_args: Annotated[tuple[str, ...], Cli("--secret-build-arg")] = Field(
        (), description="Build arg names whose values the provenance redacts (names that look "
        "secret, with TOKEN, PASSWORD, SECRET, KEY or AUTH in them, always are).")

    @field_validator("secret_build_args")
    @classmethod
    def _valid_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not BUILD_ARG_NAME_RE.match(name):
                raise ValueError(f"secret build arg name {name!r} is invalid: use letters, "
                                 "digits and _")
        return value

    @property
    def signs_locally(self) -> bool:
        return bool(self.sign_key_file or self.sign_key_block)
