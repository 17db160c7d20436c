"""Whether the configured model reads images, decided once from the settings.

Hosted OpenAI and Anthropic chat models do; the embedded model does only with a
user-supplied GGUF and its projector (FOREMAN_LOCAL_MMPROJ_PATH), which the embedded
server hands to llama.cpp (`agents/local_daemon.py`); ollama and other OpenAI-compatible
endpoints are not known, so they count as text-only unless FOREMAN_MODEL_VISION=true says
otherwise. An image
then goes to the model as an OpenAI-style `image_url` content part holding a data URL,
which langchain turns into each provider's own format.
"""

from __future__ import annotations

from pydantic import BaseModel

from foreman.agents.models import parse_model
from foreman.settings import Settings

HOW_TO_GET_VISION = (
    "set FOREMAN_MODEL=openai/gpt-4o-mini (with OPENAI_API_KEY) or anthropic/claude-3-5-haiku-latest "
    "(with ANTHROPIC_API_KEY), or FOREMAN_LOCAL_MODEL_PATH=<vision GGUF> with "
    "FOREMAN_LOCAL_MMPROJ_PATH=<its mmproj GGUF>; FOREMAN_MODEL_VISION=true declares an "
    "ollama/ or openai-compatible/ model that reads images"
)


class VisionSupport(BaseModel):
    vision: bool
    why: str


def vision_support(settings: Settings) -> VisionSupport:
    """Whether FOREMAN_MODEL can be sent images, and in a few words why (or why not)."""
    choice = parse_model(settings.model)
    if settings.model_vision is not None:
        return VisionSupport(vision=settings.model_vision, why=f"FOREMAN_MODEL_VISION={settings.model_vision}")
    if choice.provider in ("openai", "anthropic"):
        return VisionSupport(vision=True, why=f"{choice.provider} chat models read images")
    if choice.provider == "local":
        if settings.local_mmproj_path is None:
            return VisionSupport(vision=False, why="the embedded model is text-only (no FOREMAN_LOCAL_MMPROJ_PATH)")
        if not settings.local_mmproj_path.expanduser().is_file():
            return VisionSupport(vision=False, why=f"FOREMAN_LOCAL_MMPROJ_PATH={settings.local_mmproj_path} is not a file")
        return VisionSupport(vision=True, why=f"the embedded server loads {settings.local_mmproj_path.name}")
    return VisionSupport(vision=False, why=f"{choice.provider}/ models are taken as text-only "
                                           "(FOREMAN_MODEL_VISION=true if yours reads images)")
