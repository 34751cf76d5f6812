"""What a run's tags held before it wrote them, on disk, for the sweep after a SIGKILL.

A publish records every tag before its first tag write and puts them back itself when a
write fails or a signal arrives. A SIGKILL (or a power cut) between the first and the last
tag write leaves nobody to do that, and the tags split. So the record is also written to
`<work>/runs/<run_id>.tags.json` before the first write and removed once the tags are
verified or put back. The sweep that finds a dead run's journal (the next run on the
machine, `multiarch gc`) takes the repository's publish lock and puts back every tag that
still holds the dead run's index: whatever the dead run moved, and nothing another run
wrote since.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from multiarch.registry_api import Manifest

SUFFIX = ".tags.json"


class RecordedTag(BaseModel):
    model_config = ConfigDict(frozen=True)

    digest: str
    media_type: str
    body: str  # base64 of the exact manifest bytes the tag served


class TagJournal(BaseModel):
    model_config = ConfigDict(frozen=True)

    registry: str
    repository: str
    insecure: bool
    index_digest: str
    index_is_new: bool  # the index was not in the repository before this run pushed it
    before: dict[str, RecordedTag | None]

    def recorded(self) -> dict[str, Manifest | None]:
        return {tag: None if held is None else Manifest(
                    digest=held.digest, media_type=held.media_type,
                    body=base64.b64decode(held.body))
                for tag, held in self.before.items()}


def journal_path(runs_dir: Path, run_id: str) -> Path:
    return runs_dir / f"{run_id}{SUFFIX}"


def write_journal(path: Path, *, registry: str, repository: str, insecure: bool,
                  index_digest: str, index_is_new: bool,
                  before: dict[str, Manifest | None]) -> None:
    """Write the record atomically (a half-written journal would be worse than none)."""
    journal = TagJournal(
        registry=registry, repository=repository, insecure=insecure,
        index_digest=index_digest, index_is_new=index_is_new,
        before={tag: None if m is None else RecordedTag(
                    digest=m.digest, media_type=m.media_type,
                    body=base64.b64encode(m.body).decode())
                for tag, m in before.items()},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".new")
    partial.write_text(journal.model_dump_json())
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    partial.replace(path)


def read_journal(path: Path) -> TagJournal | None:
    try:
        return TagJournal.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
