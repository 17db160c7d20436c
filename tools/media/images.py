"""Open an attached image safely: its size is checked before its pixels are decoded.

Pillow reads only the header to learn width and height, so an image bomb is refused
before it takes memory; a file that is not an image is refused with what to do. Images
for a vision model are shrunk to a bounded size and re-encoded, so one photo cannot
blow the model's context.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from pydantic import BaseModel

from foreman.tools.media.limits import MediaLimits, refuse_if

VISION_MAX_SIDE = 1024  # px: enough for a screenshot's text, small enough for a context


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str


def image_info(path: Path, limits: MediaLimits, tool: str = "attach") -> ImageInfo:
    """Width, height and format from the header; MediaRefused if damaged or too large."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # our own limit below decides, with a better message
    try:
        with Image.open(path) as img:
            width, height, fmt = img.width, img.height, img.format or "?"
            img.verify()  # structure only; the pixels are decoded later, if at all
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        refuse_if(True, tool, f"{path.name} is not a readable image ({exc}); attach a PNG or JPEG "
                              "(re-save it from an image viewer if it was cut short)")
    pixels = width * height
    refuse_if(
        pixels > limits.max_image_pixels, tool,
        f"{path.name} is {width}x{height} ({pixels / 1e6:.0f} megapixels), over the limit of "
        f"{limits.max_image_pixels / 1e6:.0f}; scale it down (e.g. `convert in.png -resize 4000x4000 out.png`) "
        "or raise FOREMAN_MEDIA_MAX_IMAGE_PIXELS",
    )
    return ImageInfo(width=width, height=height, format=fmt)


def vision_data_url(data: bytes, max_side: int = VISION_MAX_SIDE) -> str:
    """A `data:image/...;base64,` URL of the image, shrunk to `max_side` px at most."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side))
        has_alpha = img.mode in ("RGBA", "LA", "P")
        out = io.BytesIO()
        if has_alpha:
            img.convert("RGBA").save(out, format="PNG", optimize=True)
            mime = "image/png"
        else:
            img.convert("RGB").save(out, format="JPEG", quality=85)
            mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(out.getvalue()).decode('ascii')}"
