"""When a visit's name may be said, and when a name that went out must be taken back.

Every frame a track is embedded on is one *look*: the classifier's answer for that frame alone
(a member, or unknown). The track's *vote* (the quality-weighted mean of its recent embeddings)
smooths over frames, but by itself it let a look-alike through: three frames whose mean fell just
inside a member's threshold named a stranger "kit", one second before the same track said
"unknown" (issue 24). So a member's name needs agreeing evidence:

- the looks naming them (clear of the threshold: within ``CLEAR`` of it, where a look-alike's best
  frames hardly ever are) span at least ``confirm_seconds`` (the household's one setting, "how sure
  before a name": one lucky view, however many frames it lasts, names nobody), and
- they are at least ``AGREE`` of the track's recent looks (mostly is not enough: the look-alike's
  frames *mostly* fall outside) -- or, for a face inside the threshold but not clear of it, every
  recent look agrees, over ``NEAR`` x ``confirm_seconds``, and
- the vote of those recent looks (their quality-weighted mean embedding) names them too: a look-alike's
  few frames inside the threshold sit just inside it, and the others pull the mean out.

Until then the visit is "someone at the door" (the ``unknown`` event and presence), held back for
at most ``HOLD_SECONDS`` past the quality gate while the looks lean towards a member, so a member's
visit is usually one event, their name. A name that went out is taken back (a ``correction``
event, never a silent second announcement) only when the vote has left it and at most a third of
the recent looks still name them: the rule that let the name out, turned around.

Measured on CelebA look-alikes with ``bench/lookalikes.py``. A pure function of the looks, so a
further condition on a visit (liveness, say) is one more check beside ``sure_name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facepi.identity.classify import UNKNOWN

AGREE = 2 / 3  # share of the recent looks that must name a member before the name is said
WINDOW = 12  # the recent looks a share is taken over
CLEAR = 0.9  # a look names a member only within this share of the threshold (not just inside it)
NEAR = 2.0  # looks inside the threshold but not clear of it name a member only if all agree, this much longer
HOLD_SECONDS = 1.0  # past the unknown gate, "someone at the door" waits at most this long for a leaning name


@dataclass(frozen=True)
class Look:
    t: float  # the frame's time
    name: str  # the classifier's answer for this frame alone (a member or unknown), clear of the threshold
    inside: str  # ... inside the threshold, however near it
    embedding: np.ndarray  # the frame's face, for the vote of the recent looks
    weight: float  # its say in that vote (detector score x face size)


@dataclass(frozen=True)
class Announcement:
    """What a track's visit says now: ``recognized`` (a member, sure), ``unknown`` (someone at the door,
    not named), ``correction`` (the name ``was`` said for this visit is taken back: now ``name``) or, with
    liveness on, ``spoof`` (a face like the member ``name``, judged not live: never said as the member)."""

    kind: str
    name: str
    was: str | None = None
    since: float = 0.0  # seconds from the track's first sighting (time to name)


def recent_faces(looks: Sequence[Look]) -> tuple[list[np.ndarray], list[float]]:
    """The embeddings and weights of the recent looks (what ``vote`` is given)."""
    recent = looks[-WINDOW:]
    return [look.embedding for look in recent], [look.weight for look in recent]


def share(looks: Sequence[Look], name: str) -> float:
    recent = looks[-WINDOW:]
    return sum(look.name == name for look in recent) / len(recent) if recent else 0.0


def sure_name(looks: Sequence[Look], vote: str, confirm_seconds: float, final: bool = False) -> str | None:
    """The member this track may be announced as now, else None.

    ``vote``: the answer for the vote of the recent looks. ``final``: the track ends now (end of a file,
    a scene cut, a photo of a folder), so it cannot be looked at for longer: the span is waived, the
    agreement is not."""
    if vote == UNKNOWN or not looks:
        return None
    recent = looks[-WINDOW:]
    clear = [look.t for look in recent if look.name == vote]
    if clear and share(recent, vote) >= AGREE and (final or clear[-1] - clear[0] >= confirm_seconds):
        return vote
    inside = [look.t for look in recent if look.inside == vote]  # near the threshold: every look, for longer
    if len(inside) == len(recent) and (final or inside[-1] - inside[0] >= NEAR * confirm_seconds):
        return vote
    return None


def leaning(looks: Sequence[Look], vote: str) -> bool:
    """The evidence points at a member without being sure yet: the vote or the latest look names one."""
    return vote != UNKNOWN or bool(looks and looks[-1].name != UNKNOWN)


def taken_back(looks: Sequence[Look], named: str, vote: str) -> bool:
    """A name that went out no longer holds: the vote has left it, and so have two thirds of the recent looks."""
    return vote != named and len(looks) >= 2 and share(looks, named) < 1 - AGREE
