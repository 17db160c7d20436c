"""Count an image in a ControlFlow message as an image, not as its base64 text.

ControlFlow 0.12.1 trims a thread to `max_input_tokens` (100,000) by running tiktoken
over each message's JSON (`message_compiler.count_tokens`). An attached image is a data
URL: one 1024-px screenshot measures about 100,000 "tokens" that way, so the message that
carries it, and every message before it, are dropped without a word, and the vision
model never sees the picture. Models bill an image at a few hundred to about a thousand
tokens whatever its bytes, so the count here replaces each image part by that much.

`tests/test_media_vision.py` holds the canary: unpatched, a screenshot counts as more
than the whole budget.
"""

from __future__ import annotations

from typing import Any

from controlflow.events import message_compiler

from foreman.errors import ConfigurationError

IMAGE_TOKENS = 1_000  # about what OpenAI bills a detailed 1024-px image (765) and Anthropic (~1,400 at most)
_original: dict[str, Any] = {}


def _without_images(content: Any) -> tuple[Any, int]:
    if not isinstance(content, list):
        return content, 0
    kept, images = [], 0
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
            images += 1
            kept.append({"type": "text", "text": "[image]"})
        else:
            kept.append(part)
    return kept, images


def count_tokens(message: Any) -> int:
    content, images = _without_images(getattr(message, "content", None))
    if not images:
        return _original["count_tokens"](message)
    return _original["count_tokens"](message.model_copy(update={"content": content})) + images * IMAGE_TOKENS


def apply_image_token_count() -> None:
    """Install the count once; refuses a ControlFlow whose compiler no longer has it."""
    if _original:
        return
    original = getattr(message_compiler, "count_tokens", None)
    if not callable(original) or not callable(getattr(message_compiler, "trim_messages", None)):
        raise ConfigurationError("ControlFlow changed shape (message_compiler.count_tokens is gone); "
                                 "install the pinned controlflow==0.12.1 or update foreman/cf_adapter/images.py")
    _original["count_tokens"] = original
    message_compiler.count_tokens = count_tokens


def original_count_tokens() -> Any:
    """ControlFlow's own count (for the canary test)."""
    return _original.get("count_tokens", message_compiler.count_tokens)
