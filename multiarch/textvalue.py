"""Values users write as one string but code reads as fields.

`linux/arm/v7` and `registry.example.com/team/app:1.0` travel as strings through the CLI,
flow parameters and JSON, yet code wants their parts validated once. Subclasses say how
to split the text and what makes the parts valid; this base does the pydantic wiring.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator


class TextValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def fields_from_text(cls, text: str) -> dict[str, Any]:
        """Split the written form into fields; raise ValueError naming the fix."""
        raise NotImplementedError

    def check(self) -> None:
        """Validate the fields; raise ValueError naming the fix."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return cls.fields_from_text(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _checked(self) -> Self:
        self.check()
        return self

    @model_serializer(mode="plain")
    def _as_text(self) -> str:
        return str(self)
