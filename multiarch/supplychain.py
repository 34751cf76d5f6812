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
        (), description="Removed: it redacted only the provenance, while the value stayed in "
        "the image history and the Prefect database. Pass a secret as a build secret "
        "(--secret id=NAME,env=VAR and RUN --mount=type=secret,id=NAME); secret-looking build "
        "arg names are still redacted in the provenance, and warned about.")

    @field_validator("secret_build_args")
    @classmethod
    def _removed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Kept as a field only to refuse it in one line, naming the fix (an unknown flag or
        parameter would say neither)."""
        if value:
            name = value[0] if BUILD_ARG_NAME_RE.match(value[0]) else "NAME"
            raise ValueError(
                "removed: it hid the value only from the provenance, while the image history "
                "and Prefect's stored parameters kept it: drop the build arg and pass the "
                f"value as a build secret (--secret id={name},env={name}, read by RUN "
                f"--mount=type=secret,id={name} from /run/secrets/{name})")
        return value

    @property
    def signs_locally(self) -> bool:
        return bool(self.sign_key_file or self.sign_key_block)
