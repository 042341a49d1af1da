"""Small pieces of the page's answers: a face crop as JPEG, a redirect, a plain-text answer, a form's number."""

from __future__ import annotations

import numpy as np
from aiohttp import web


def jpeg(rgb: np.ndarray) -> bytes:
    """A face crop as JPEG, by Pillow (OpenCV stays out of the idle page: ~30 MB)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def whole(text: str, what: str) -> int:
    """A form's number, or a plain message (never Python's "invalid literal for int()")."""
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise ValueError(f"{what} must be a whole number like 1 or 2 (got {text[:20]!r})")
    return int(text)


def see_other(location: str) -> web.Response:
    """A redirect that keeps the cookies set on it (a raised HTTPException would not carry them here)."""
    return web.Response(status=303, headers={"Location": location})


def plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")
