"""Named result types a plan or workflow step may ask for (`result: review`).

A named type turns an agent's answer into fields later steps can test in conditions
(`review.ready`) and scripts can read from FOREMAN_INPUTS, instead of free text.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Review(BaseModel):
    """A reviewer's verdict on a draft."""

    ready: bool = Field(description="true only if the draft can be published as it is")
    notes: str = Field(default="", max_length=1000, description="What to fix, or why it is ready")


BUILTIN_SCHEMAS: dict[str, type[BaseModel]] = {"review": Review}
