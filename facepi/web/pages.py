"""The page's HTML, rendered on the server: plain forms and images, no JavaScript, no CDN. Every text
that came from outside (a name, a photo's file name, a camera id) is escaped here, once."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

NAV = (("/people", "People"), ("/events", "Door events"), ("/visitors", "Visitors"), ("/journal", "Journal"))
STYLE = """body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#2d4a3e;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;padding:.2em .5em;border-radius:4px}header a.on{background:#4c7a66}
header form{margin-left:auto}main{padding:1em;max-width:1100px}
section.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em;margin:0 0 1em}
.faces{display:flex;flex-wrap:wrap;gap:.5em}.face{text-align:center;font-size:.8em}
.face img{width:96px;height:96px;border:4px solid #fff;border-radius:4px;display:block}
.nopic{width:96px;height:96px;background:#eee;font-size:.75em;display:flex;align-items:center;
justify-content:center}.face.outlier img{border-color:#dc1e1e}.face.duplicate img{border-color:#ff9600}
form.inline{display:inline-flex;gap:.3em;margin:.2em 0}button{cursor:pointer}
.flash{padding:.5em .8em;border-radius:4px;margin-bottom:.6em}.ok{background:#dff0d8}.error{background:#f8d7da}
.note{background:#fff3cd}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;
padding:.3em;text-align:left;vertical-align:top;font-size:.9em}.muted{color:#666;font-size:.85em}
img.preview{max-width:100%;border:1px solid #ccc}main{overflow-wrap:anywhere}input{max-width:100%}
@media (max-width:600px){table,tbody,tr,td{display:block;width:auto}tr{border-bottom:1px solid #ddd;
padding:.3em 0}td{border:0}th{display:none}}"""


def e(text: Any) -> str:
    return escape(str(text), quote=True)


def when(at: str) -> str:
    """A stored UTC time (ISO 8601) as the Pi's local time, readably ("Mon 7 Dec 17:05:09")."""
    from datetime import datetime

    try:
        t = datetime.fromisoformat(str(at)).astimezone()
    except ValueError:
        return str(at)
    return f"{t:%a} {t.day} {t:%b %Y %H:%M:%S}"


def path_part(text: str) -> str:
    return quote(text, safe="")


def form(action: str, csrf: str, fields: str, button: str, cls: str = "inline", extra: str = "") -> str:
    """A POST form with the session's CSRF token: every form on the page is made here."""
    return (f'<form class="{cls}" method="post" action="{e(action)}"{extra}>'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">{fields}<button type="submit">{e(button)}</button>'
            f'</form>')


def hidden(name: str, value: Any) -> str:
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def layout(title: str, body: str, here: str = "", csrf: str | None = None,
           flash: list[tuple[str, str]] | None = None) -> str:
    nav = "" if csrf is None else "".join(
        f'<a href="{href}"{" class=on" if href == here else ""}>{label}</a>' for href, label in NAV) + \
        form("/logout", csrf, "", "Log out")
    notes = "".join(f'<div class="flash {e(kind)}">{e(text)}</div>' for kind, text in flash or [])
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{e(title)} - facepi</title>'
            f'<link rel="stylesheet" href="/style.css"></head><body><header><strong>facepi</strong>{nav}</header>'
            f'<main><h1>{e(title)}</h1>{notes}{body}</main></body></html>')


def login(csrf: str, message: str = "") -> str:
    msg = f'<div class="flash error">{e(message)}</div>' if message else ""
    body = (f'{msg}<section class="card"><form method="post" action="/login">{hidden("csrf", csrf)}'
            f'<label>Password <input type="password" name="password" autocomplete="current-password" autofocus '
            f'required></label> <button type="submit">Log in</button></form></section>')
    return layout("Log in", body)


def ask(do: str, fields: str, button: str) -> str:
    """A first press that changes nothing: it opens the confirmation page (a GET form, no script)."""
    return (f'<form class="inline" method="get" action="/people/confirm">{hidden("do", do)}{fields}'
            f'<button type="submit">{e(button)}</button></form>')


def confirm(do: str, name: str, number: int | None, row: int | None, csrf: str) -> str:
    """The second step of Remove and Forget: what will go, said plainly, and the one button that does it."""
    if do == "remove":
        pic = f'<img src="/img/face/{row}.jpg" alt="{e(name)} photo {number}">' if row is not None else ""
        text = f"Remove photo {number} of {e(name)}? The door stops using it (undo can bring it back)."
        go = form("/people/remove", csrf, hidden("name", name) + hidden("number", number),
                  f"Yes, remove photo {number}")
    else:
        pic = ""
        text = (f"Forget {e(name)}? All of {e(name)}'s photos leave the gallery and the door no longer knows them "
                f"(undo can bring them back).")
        go = form("/people/forget", csrf, hidden("name", name), f"Yes, forget {name}")
    return (f'<section class="card"><div class="face">{pic}</div><p>{text}</p>{go} '
            f'<a href="/people">No, go back</a></section>')


def people(people: list[dict], csrf: str, names: list[str], last: Any = None) -> str:
    """Each person with their enrolled faces, numbered as ``facepi gallery remove`` counts them, the
    doubtful ones framed as on the contact sheet."""
    blocks = []
    for p in people:
        n = p["name"]
        faces = "".join(
            f'<div class="face {f["mark"]}">'
            + (f'<img src="/img/face/{f["row"]}.jpg" alt="{e(n)} photo {f["number"]}" title="{e(f["source"])}">'
               if f["row"] is not None else f'<div class="nopic" title="{e(f["source"])}">no picture kept</div>')
            + f'{f["number"]}'
            + (f' <span class="muted">{e(f["why"])}</span>' if f["why"] else "")
            + ask("remove", hidden("name", n) + hidden("number", f["number"]), "Remove...") + "</div>"
            for f in p["faces"])
        blocks.append(
            f'<section class="card person" data-name="{e(n)}"><h2>{e(n)} <span class="muted">{len(p["faces"])} '
            f'photo(s)</span></h2><div class="faces">{faces}</div>'
            + form("/people/rename", csrf, hidden("name", n) + '<input name="new" placeholder="new name" required>',
                   "Rename")
            + ask("forget", hidden("name", n), "Forget...") + "</section>")
    options = "".join(f'<option value="{e(n)}">' for n in names)
    upload = ('<section class="card"><h2>Add photos</h2><p class="muted">Photos from a phone (JPEG, HEIC, PNG, '
              '...) of one person, new or enrolled: the same checks as <code>facepi enroll</code>.</p>'
              + form("/upload", csrf, '<input name="name" list="names" placeholder="name" required>'
                     f'<datalist id="names">{options}</datalist> <input type="file" name="photos" multiple required '
                     'accept="image/*,.heic,.heif">', "Upload", "upload", ' enctype="multipart/form-data"')
              + "</section>")
    undo = (form("/undo", csrf, hidden("target", last.id), f"Undo the last change: {last.summary}")
            if last is not None else "")
    legend = ('<p class="muted">Red frame: far from the person\'s other photos (probably someone else); orange: '
              'the same shot twice. Numbers as <code>facepi gallery remove NAME N</code> counts them.</p>')
    empty = "" if people else "<p>Nobody is enrolled yet.</p>"
    return upload + undo + legend + empty + "".join(blocks)


def events(rows: list[Any], csrf: str, done: dict[str, str] | None = None) -> str:
    """The kept door events; ``done``: what was already done about an event (by its label), shown instead of
    offering "Wrong name" again."""
    done = done or {}
    if not rows:
        return ('<p>No door events kept yet (the daemon keeps the last <code>[web] events_kept</code> with their '
                'face).</p>')
    out = []
    for ev in rows:
        key = hidden("run", ev.run) + hidden("seq", ev.seq)
        img = (f'<img src="/img/event/{path_part(ev.run)}/{ev.seq}.jpg" alt="face of event {ev.seq}">'
               if ev.crop is not None else "")
        said = done.get(event_label(ev))
        wrong = (f'<em>{e(said)}</em> ' if said else
                 form("/events/wrong", csrf, key, "Wrong name") if ev.name != "unknown" else "")
        out.append(f'<tr class="event" data-seq="{ev.seq}"><td><div class="face">{img}</div></td>'
                   f'<td><strong>{e(ev.name)}</strong><br><span class="muted">{e(ev.camera)}, {e(when(ev.at))}, '
                   f'distance {ev.distance:.3f}</span></td><td>{wrong}'
                   + form("/events/name", csrf, key + '<input name="name" placeholder="this is ..." required>',
                          "This is") + "</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def event_label(ev: Any) -> str:
    """How a "Wrong name" on this event is labelled in the journal."""
    return f"event {ev.seq} at {ev.camera}, {ev.at}"


def visitors(rows: list[tuple[Any, int]], csrf: str) -> str:
    if not rows:
        return "<p>No visitors stored (the daemon keeps unknown visitors with <code>[learning] enabled</code>).</p>"
    out = []
    for v, n in rows:
        faces = "".join(f'<div class="face"><img src="/img/visitor/{path_part(v.id)}/{k}.jpg" alt="{e(v.id)} '
                        f'face {k + 1}"></div>' for k in range(n))
        out.append(f'<section class="card visitor" data-id="{e(v.id)}"><h2>{e(v.id)} <span class="muted">'
                   f'{v.visits} visit(s), last {e(v.last_seen)}</span></h2><div class="faces">{faces}</div>'
                   + form("/visitors/name", csrf, hidden("visitor", v.id) +
                          '<input name="name" placeholder="name" required>', "Name")
                   + form("/visitors/forget", csrf, hidden("visitor", v.id), "Forget") + "</section>")
    return "".join(out)


def journal(changes: list[Any]) -> str:
    rows = "".join(f'<tr><td>{c.id}</td><td>{e(when(c.at))}</td><td>{e(c.origin)}</td><td>{e(c.what)}</td>'
                   f'<td>{e(c.summary)}{" <em>(undone)</em>" if c.undone_by else ""}</td></tr>' for c in changes)
    return ("<table><tr><th>#</th><th>when</th><th>from</th><th>what</th><th>change</th></tr>" + rows + "</table>"
            if changes else "<p>No changes recorded yet.</p>")


def upload_result(name: str, lines: list[tuple[str, str]], groups: list[dict], csrf: str) -> str:
    """What an upload did, in the enrolment's own words, and a numbered preview per group photo."""
    out = "".join(f'<div class="flash {kind}">{e(text)}</div>' for kind, text in lines)
    for g in groups:
        out += (f'<section class="card group"><h2>{e(g["photo"])}: {g["faces"]} faces</h2>'
                f'<img class="preview" src="/img/pending/{g["token"]}.png" alt="faces numbered">'
                + form("/upload/face", csrf, hidden("token", g["token"]) + hidden("name", name) +
                       f'<label>Face number <input name="face" type="number" min="1" max="{g["faces"]}" required>'
                       f'</label>', f"Enrol this face as {name}") + "</section>")
    return out + '<p><a href="/people">Back to the people</a></p>'
