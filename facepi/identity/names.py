"""Names as a human reads them, and the key a person's topics and Home Assistant entities are made of.

**Look-alike names.** ``MADONNA``, ``ｍａｄｏｎｎａ`` (fullwidth), ``Мadonna`` (Cyrillic ``М``) and
``madonnaㅤ`` (a Hangul filler, drawn as nothing) are madonna to anyone reading a dashboard, so they are
refused as a second person and as the reserved words (``unknown``...). Two names are the same when their
skeletons are (after Unicode TR39's idea of a skeleton): NFKC (width, compatibility forms), invisible
characters dropped (Unicode's Default_Ignorable_Code_Point, e.g. zero-width spaces, the Hangul fillers),
each character replaced by the ASCII letter it is confusable with where Unicode's confusables data names
one (``confusable-homoglyphs``, the data of Unicode's confusables.txt: Cyrillic/Greek look-alikes), case
folded, runs of spaces made one. The table is built once, when a name is first checked (0.4 s, 130 kB
kept), never in the frame loop.

**Person keys.** A person's entities (``present_<key>``, ``seen_<key>``) and household topics
(``seen/<key>``) used a slug plus 24 bits of sha1, so a name with someone else's key could be found in
seconds and took over their entities. Now:

- a person already in a gallery made before this version keeps that key (so their entities and every
  automation on them survive the upgrade), unless it collides with someone listed earlier;
- everyone else gets the slug plus 128 bits of sha256, which no one can choose a second name for;
- the keys are kept in the gallery's settings (``person_keys``, journaled with every change) and a
  change that would give two people one key is refused (``check_keys``): a collision is impossible by
  construction, not only unlikely. A short key can never equal a long one (the last 33 characters of a
  long key are ``_`` and 32 hex digits; a short key has a ``_`` 7 characters from its end).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache
from typing import Any

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15): drawn as nothing.
IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
             (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
             (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
             (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
BLANKS = "\u2800"  # braille blank: not "ignorable" to Unicode, but drawn as nothing too


def invisible(c: str) -> bool:
    """A character drawn as nothing (Default_Ignorable_Code_Point, or the braille blank)."""
    o = ord(c)
    return c in BLANKS or any(lo <= o <= hi for lo, hi in IGNORABLE)


@lru_cache(maxsize=1)
def _confusables() -> dict[int, str]:
    """Code point -> the ASCII character Unicode's confusables data says it looks like (where it names one)."""
    import json
    from importlib.resources import files

    data: dict[str, Any] = json.loads(files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[int, str] = {}
    for char, glyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        ascii_ = sorted(g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isprintable())
        if ascii_:
            table[ord(char)] = ascii_[0]
    return table


def skeleton(name: str) -> str:
    """What a person reads in ``name``: equal skeletons are the same name to a human."""
    text = "".join(c for c in unicodedata.normalize("NFKC", name) if not invisible(c))
    table = _confusables()
    text = "".join(table.get(ord(c), c) for c in text)
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split())


def lookalike(name: str, others: list[str]) -> str | None:
    """The first of ``others`` that reads as ``name`` (``name`` itself excluded), or None."""
    s = skeleton(name)
    return next((o for o in others if o != name and skeleton(o) == s), None)


def legacy_key(name: str) -> str:
    """The key of facepi before person keys were kept: slug + 24 bits of sha1 (kept for the people
    enrolled then, so their Home Assistant entities survive the upgrade; never given to anyone new)."""
    return f"{_slug(name)}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def new_key(name: str) -> str:
    """A new person's key: slug + 128 bits of sha256 (no second name can be found for it)."""
    return f"{_slug(name)}_{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:32] or "person"


def person_keys(meta: dict[str, Any], people: list[str]) -> dict[str, str]:
    """Every person's key: kept ones from ``meta['person_keys']``; a gallery from before person keys keeps
    the old key of each of its people (the earlier of two colliding names keeps it); new people get
    ``new_key``."""
    kept = meta.get("person_keys")
    keys: dict[str, str] = {}
    if not isinstance(kept, dict):  # a gallery from before person keys: its people keep their entities
        for name in people:
            old = legacy_key(name)
            keys[name] = old if old not in keys.values() else new_key(name)
        return keys
    for name in people:
        key = kept.get(name)
        keys[name] = key if isinstance(key, str) and key else new_key(name)
    return keys


def check_keys(keys: dict[str, str]) -> None:
    """Refuse two people with one key (``ValueError`` naming both)."""
    seen: dict[str, str] = {}
    for name, key in keys.items():
        if key in seen:
            raise ValueError(f"{name!r} and {seen[key]!r} would share the key {key!r} (their Home Assistant "
                             f"entities and topics); choose another name")
        seen[key] = name
