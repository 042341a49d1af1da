"""The documentation cannot rot silently: docs/configuration.md's reference is the config schema's, and
every relative link (and #anchor) in README.md and docs/*.md lands somewhere.

Regenerate the configuration reference after changing facepi/config/schema.py:
    python tests/test_docs.py --write
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import tomli_w
from markdown_it import MarkdownIt

from facepi import config

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN generated from facepi/config/schema.py by: python tests/test_docs.py --write -->"
END = "<!-- END generated -->"
REGENERATE = "python tests/test_docs.py --write"


def _value(value: object) -> str:
    """A default as it is written in the TOML file (tomli_w, as check-config writes it)."""
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(obj: object, section: str | None) -> list[str]:
    rows = ["| key | default | allowed | environment | what it does |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("secret") or dataclasses.is_dataclass(value):
            continue
        m = f.metadata
        allowed = f"{m['min']:g} to {m['max']:g}" if m.get("min") is not None else \
            ", ".join(m["choices"]) if m.get("choices") else ""
        env = "FACEPI_" + (f"{section}_{f.name}" if section else f.name).upper()
        rows.append(f"| `{f.name}` | `{_cell(_value(value))}` | {allowed} | `{env}` | {_cell(m['help'])} |")
    return rows


def config_reference() -> str:
    """Every key of facepi/config/schema.py's schema with its default, range, environment variable and help text,
    as Markdown: the same source as systemd/facepi.toml.example (config.example())."""
    cfg = config.Config()
    lines = ["## Top-level keys", "", *_table(cfg, None)]
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            lines += ["", f"## `[{f.name}]`", "", config.schema.SECTION_HELP[f.name].capitalize() + ".", "",
                      *_table(section, f.name)]
    return "\n".join(lines) + "\n"


def _generated(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise AssertionError(f"{CONFIG_PAGE}: the markers {BEGIN!r} and {END!r} are missing")
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n") + "\n"


def write_config_reference() -> None:
    text = CONFIG_PAGE.read_text()
    _generated(text)
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    CONFIG_PAGE.write_text(text[:start] + "\n" + config_reference() + text[end:])


def test_the_configuration_reference_is_the_schemas():
    assert _generated(CONFIG_PAGE.read_text()) == config_reference(), \
        f"docs/configuration.md is out of date with facepi/config/schema.py; regenerate it: {REGENERATE}"


# --- links ------------------------------------------------------------------------------------------

MD = MarkdownIt("commonmark").enable("table")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): lower case, punctuation dropped, each space a '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The #anchors GitHub makes for the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    tokens = MD.parse(path.read_text())
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            inline = tokens[i + 1].children or []
            base = slug("".join(t.content for t in inline if t.type in ("text", "code_inline")))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Every link and image target in a Markdown file (code blocks and code spans are not links)."""
    found = []
    for token in MD.parse(path.read_text()):
        for child in token.children or []:
            if child.type == "link_open":
                found.append(str(child.attrs["href"]))
            elif child.type == "image":
                found.append(str(child.attrs["src"]))
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    """Relative links from ``path`` that name no file, or a #anchor no heading of the target makes."""
    broken = []
    for href in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", href):  # https:, mailto: ... : not this repository's
            continue
        target, _, anchor = href.partition("#")
        dest = (path.parent / unquote(target)).resolve() if target else path
        if not dest.exists():
            broken.append(f"{href}: no such file {_shown(dest)}")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{href}: no heading in {_shown(dest)} makes #{anchor}")
    return broken


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)} has broken links"


def test_the_link_check_sees_a_broken_link_and_anchor(tmp_path):
    """The check itself: a missing file and a missing anchor are caught; code is not a link."""
    (tmp_path / "b.md").write_text("# Where to go\n\n## Where to go\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#where-to-go-1) [file](c.md) [anchor](b.md#nowhere) `[code](d.md)`\n\n"
                    "```\n[fenced](e.md)\n```\n[self](#top) ![pic](b.md)\n\n# Top\n")
    assert [b.split(":")[0] for b in broken_links(page)] == ["c.md", "b.md#nowhere"]


def test_every_page_is_reachable_from_the_readme():
    linked = {(ROOT / unquote(href.partition("#")[0])).resolve() for href in links(ROOT / "README.md")}
    assert [p.name for p in PAGES[1:] if p not in linked] == []


# --- MQTT topics -------------------------------------------------------------------------------------

def published_topics() -> set[str]:
    """Every topic leaf facepi publishes or subscribes to, read from the code that does it: the publisher's
    topics and state slots, the command topics, the topics the discovery configs point at, and the household's."""
    from facepi.door.commands import COMMANDS

    door = ROOT / "facepi" / "door"
    mqtt = (door / "mqtt.py").read_text() + (door / "visitor_topics.py").read_text()
    leaves = set(re.findall(r'topic\("([a-z_]+)"\)', mqtt)) | set(re.findall(r'_state\("([a-z_]+)"', mqtt))
    leaves |= set(COMMANDS)
    ha = (door / "homeassistant.py").read_text()
    leaves |= set(re.findall(r'\{base\}/([a-z_]+)', ha))
    house = mqtt + ha + (door / "doors.py").read_text()
    leaves |= {m for m in re.findall(r'\{(?:self\.house|topic|house)\}/([a-z_]+)', house)}
    return leaves


def topic_table_entries() -> set[str]:
    """The first column of every topic table in docs/home-assistant.md (`leaf` or `leaf/<key>`)."""
    text = (ROOT / "docs" / "home-assistant.md").read_text()
    return {m.split("/")[0] for m in re.findall(r"^\| `([a-z_]+(?:/<[a-z_]+>)?)` \|", text, re.M)}


def test_every_topic_is_in_the_topic_table():
    found = published_topics()
    assert {"event", "visitor_info", "answer", "show_visitor", "seen", "anyone"} <= found  # the scan sees them
    assert sorted(found - topic_table_entries()) == [], "docs/home-assistant.md's topic tables miss these topics"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {REGENERATE}")
    write_config_reference()
    print(f"wrote {CONFIG_PAGE.relative_to(ROOT)}")
