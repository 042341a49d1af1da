"""Home Assistant MQTT discovery: what a household sees of facepi on its dashboard.

One device per camera ("Front door"), with:
- **Last person** (sensor, retained ``last`` topic: survives a Home Assistant restart
  without re-firing anything); a stranger is the state ``Stranger``, never HA's
  own ``unknown`` (which means "no value" and leaves a gap in history);
- **Recognition** (event entity on the ``event`` topic: fires once per announcement, the event's
  ``type``: ``recognized``, ``unknown`` or ``correction``; attributes name, was, score, distance, camera,
  timestamp, box, seq, run);
- **Someone in view** and one presence binary_sensor per enrolled person, from the
  retained ``person`` topic; they follow the gallery (added on enrol, removed on forget);
- **Snapshot** (image entity, only with ``mqtt.snapshot = true``: the frame of each
  announcement with the face box drawn);
- diagnostics from the ``status`` topic (fps, latency p95, source, frames and events
  dropped, gallery size, model) and a **Reload gallery** button (``command`` topic);
- **Last command** (sensor on ``answer``: every command's answer, on a topic of its own so the next
  visit's notice never overwrites it);
- with ``[liveness]`` on: **Spoof** (event entity on the ``spoof`` topic: fires ``spoof`` once per visit
  judged not live, with the member it resembled), **Liveness** (diagnostic: calibrated or not, the
  threshold in use; the rest as attributes) and, with snapshots, **Spoof picture** (image);
- with ``[learning]`` on: **Learning** (sensor: what the last visit did); with ``mqtt.snapshot`` on as
  well (a visitor's face leaves the Pi only where snapshots may): **Last unknown visitor** (image: the
  best door crop of the visitor shown, its id, visits and last seen as attributes from ``visitor_info``)
  and **Name this visitor** (text: typing ``alice`` sends ``{"visitor": <the id shown>, "name": "alice"}``; the id
  comes from the text entity's own attributes, also ``visitor_info``, so a naming lands on the
  visitor the person was looking at, not on whoever came last) and **Visitor shown** (select of every
  stored visitor: the one chosen is shown, so any visitor can be named). Attributes topics that are
  cleared (empty) go through a template that makes them ``{}``: Home Assistant logs no ``Erroneous JSON``.

With ``[household] id`` set, one more device for the whole household ("facepi household <id>"),
published identically by every daemon of the household (same unique ids, retained, idempotent): per
enrolled person **<Name> last seen** (where: the camera's name; the time and camera id as attributes)
and **<Name> last seen at** (a timestamp sensor), from the retained ``<household topic>/seen/<key>``; and
**Someone at any door** (binary_sensor) from the retained ``<household topic>/anyone`` (``door.doors``).

Payloads use ``default_entity_id`` (not the deprecated ``object_id``) and carry an
``origin`` block. Names reach templates only as JSON string literals (``tojson``
output or :func:`literal`), so a name with quotes cannot break a template.
"""

from __future__ import annotations

import json
from typing import Any

from facepi import __version__
from facepi.identity.names import new_key

STRANGER = "Stranger"  # the dashboard's word for facepi's "unknown"
# The text entity sends what was typed with the visitor id it holds as an attribute. ``entity_id`` is the
# text entity itself (Home Assistant's MQTT command templates get it as a variable), so this holds
# whatever entity id Home Assistant gave it (before 2025.10 it ignores ``default_entity_id``).
NAMING_TEMPLATE = '{{ {"visitor": state_attr(entity_id, "visitor"), "name": value} | tojson }}'
# ``visitor_info`` cleared (empty retained) must clear the id too: Home Assistant keeps the old
# attributes when a payload is not JSON, and a naming would then go to a visitor no longer shown.
INFO_ATTRIBUTES = "{{ value if value else '{}' }}"
EVENT_TYPES = ("recognized", "unknown", "correction")  # the Recognition event entity's types
NO_VISITOR = "None"  # the visitor select's state (and only option) when no visitor is stored: HA's "no value"


def literal(text: str) -> str:
    """``text`` as a Jinja string literal (JSON string syntax is valid Jinja)."""
    return json.dumps(text, ensure_ascii=False)


def person_key(name: str, keys: dict[str, str] | None = None) -> str:
    """A topic- and id-safe key for a person's entities: the one the gallery keeps for them (``keys``, from
    ``facepi.identity.names.person_keys``: a person enrolled before keys were kept keeps their old one), else
    a new person's (readable part + 128 bits of sha256: no other name has it)."""
    return (keys or {}).get(name) or new_key(name)


def discovery(camera_id: str, camera_name: str, base: str, prefix: str, people: list[str],
              snapshot: bool, learning: bool = False, liveness: bool = False,
              keys: dict[str, str] | None = None, visitors: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every discovery config: topic -> payload."""
    uid = f"facepi_{camera_id}"
    device = {"identifiers": [uid], "name": camera_name, "manufacturer": "facepi",
              "model": "facepi door camera", "sw_version": __version__}
    common = {"device": device, "origin": {"name": "facepi", "sw_version": __version__},
              "availability_topic": f"{base}/availability", "payload_available": "online",
              "payload_not_available": "offline"}

    def entity(component: str, key: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return (f"{prefix}/{component}/{uid}/{key}/config",
                {"unique_id": f"{uid}_{key}", "default_entity_id": f"{component}.{uid}_{key}", **fields, **common})

    def diagnostic(key: str, name: str, template: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return entity("sensor", key, name=name, state_topic=f"{base}/status", value_template=template,
                      entity_category="diagnostic", **fields)

    # the event's own type (recognized, unknown, correction; spoof: judged not live); an older facepi's has none
    event_json = ('{{ {"event_type": "spoof" if value_json.live is defined and value_json.live == false else '
                  'value_json.type if value_json.type is defined else '
                  '("unknown" if value_json.name == "unknown" else "recognized"), '
                  '"name": value_json.name, "was": value_json.was | default(none), "score": value_json.score, '
                  '"distance": value_json.distance, "camera": value_json.camera, "timestamp": value_json.timestamp, '
                  '"box": value_json.box, "seq": value_json.seq, "run": value_json.run} | tojson }}')
    configs = dict([
        entity("sensor", "last_person", name="Last person", state_topic=f"{base}/last",
               value_template=f'{{{{ {literal(STRANGER)} if value_json.name == "unknown" else value_json.name }}}}',
               json_attributes_topic=f"{base}/last", icon="mdi:account-eye"),
        entity("event", "recognition", name="Recognition", state_topic=f"{base}/event",
               event_types=list(EVENT_TYPES) + (["spoof"] if liveness else []), value_template=event_json,
               device_class="motion",
               icon="mdi:face-recognition"),
        entity("binary_sensor", "someone", name="Someone in view", state_topic=f"{base}/person",
               value_template="{{ 'ON' if value_json | length > 0 else 'OFF' }}", device_class="occupancy"),
        entity("button", "reload", name="Reload gallery", command_topic=f"{base}/command", payload_press="reload",
               entity_category="config", icon="mdi:reload"),
        # "That wasn't X": the button carries the last recognition as its attributes and sends which one it
        # was (name, seq, run), so a press lands on the recognition shown, not on whoever came since.
        entity("button", "wrong_name", name="Wrong name", command_topic=f"{base}/wrong_name",
               json_attributes_topic=f"{base}/last", icon="mdi:account-cancel",
               command_template='{{ {"name": state_attr(entity_id, "name"), "seq": state_attr(entity_id, "seq"), '
                                '"run": state_attr(entity_id, "run")} | tojson }}'),
        diagnostic("fps", "Frames per second", "{{ value_json.fps }}", unit_of_measurement="fps",
                   state_class="measurement"),
        diagnostic("latency", "Latency p95", "{{ value_json.latency_ms_p95 }}", unit_of_measurement="ms",
                   device_class="duration", state_class="measurement"),
        diagnostic("source", "Source", "{{ value_json.source }}", icon="mdi:cctv"),
        diagnostic("events_dropped", "Events dropped", "{{ value_json.events_dropped }}",
                   state_class="total_increasing"),
        diagnostic("frames_dropped", "Frames dropped", "{{ value_json.frames_dropped }}",
                   state_class="total_increasing"),
        diagnostic("time_to_name", "Time to name p95", "{{ value_json.time_to_name_ms_p95 }}",
                   unit_of_measurement="ms", device_class="duration", state_class="measurement"),
        diagnostic("corrections", "Corrections", "{{ value_json.corrections }}", state_class="total_increasing"),
        # every command's answer, on a topic of its own: the next visit's notice never overwrites it
        entity("sensor", "answer", name="Last command", state_topic=f"{base}/answer",
               value_template="{{ value_json.message }}", json_attributes_topic=f"{base}/answer",
               icon="mdi:message-reply-text"),
        diagnostic("people", "People enrolled", "{{ value_json.people }}", icon="mdi:account-group"),
        diagnostic("model", "Model", "{{ value_json.model }}", icon="mdi:brain"),
    ])
    if snapshot:
        configs.update([entity("image", "snapshot", name="Snapshot", image_topic=f"{base}/snapshot",
                               content_type="image/jpeg")])
    if liveness:
        spoof_json = ('{{ {"event_type": "spoof", "resembles": value_json.resembles, "liveness": value_json.liveness, '
                      '"camera": value_json.camera, "timestamp": value_json.timestamp, "box": value_json.box} '
                      '| tojson }}')
        configs.update([
            entity("event", "spoof", name="Spoof", state_topic=f"{base}/spoof", event_types=["spoof"],
                   value_template=spoof_json, icon="mdi:shield-alert"),
            diagnostic("liveness", "Liveness", "{{ value_json.liveness.says if value_json.liveness is defined "
                       "else 'off' }}", json_attributes_topic=f"{base}/status",
                       json_attributes_template="{{ (value_json.liveness if value_json.liveness is defined "
                                                "else {}) | tojson }}", icon="mdi:shield-account"),
        ])
        if snapshot:
            configs.update([entity("image", "spoof_snapshot", name="Spoof picture",
                                   image_topic=f"{base}/spoof_snapshot", content_type="image/jpeg")])
    if learning:
        configs.update([entity("sensor", "learning", name="Learning", state_topic=f"{base}/learning",
                               value_template="{{ value_json.message }}", json_attributes_topic=f"{base}/learning",
                               icon="mdi:school")])
    if learning and snapshot:
        configs.update([
            entity("image", "last_visitor", name="Last unknown visitor", image_topic=f"{base}/visitor",
                   content_type="image/jpeg", json_attributes_topic=f"{base}/visitor_info",
                   json_attributes_template=INFO_ATTRIBUTES),
            # any stored visitor, not only the newest: choosing one shows its picture (and id) above
            entity("select", "visitor", name="Visitor shown", command_topic=f"{base}/show_visitor",
                   state_topic=f"{base}/visitor_info", options=list(visitors or [NO_VISITOR]),
                   value_template=f"{{% if value %}}{{{{ value_json.visitor }}}}{{% else %}}{NO_VISITOR}{{% endif %}}",
                   icon="mdi:account-search"),
            entity("text", "name_visitor", name="Name this visitor", command_topic=f"{base}/name_visitor",
                   command_template=NAMING_TEMPLATE, json_attributes_topic=f"{base}/visitor_info",
                   json_attributes_template=INFO_ATTRIBUTES, min=1, max=64, mode="text", icon="mdi:account-plus"),
        ])
    for name in people:
        configs.update([entity("binary_sensor", f"present_{person_key(name, keys)}", name=f"{name} in view",
                               state_topic=f"{base}/person", device_class="presence",
                               value_template=f"{{{{ 'ON' if {literal(name)} in value_json else 'OFF' }}}}")])
    return configs


def discovery_filter(prefix: str, camera_id: str) -> str:
    """The MQTT topic filter matching every discovery config of one camera (``is_ours``)."""
    return f"{prefix}/+/facepi_{camera_id}/+/config"


def is_ours(topic: str, prefix: str, camera_id: str) -> bool:
    """A discovery config topic of this camera (so one left over from a forgotten person can be cleared)."""
    if not topic.startswith(prefix + "/"):
        return False
    parts = topic[len(prefix) + 1:].split("/")
    return len(parts) == 4 and parts[1] == f"facepi_{camera_id}" and parts[3] == "config"


def household_discovery(household_id: str, topic: str, prefix: str, people: list[str],
                        keys: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The household device's discovery configs: topic -> payload. The same on every daemon of the household
    for the same people (nothing of the camera in it), so their retained configs never fight."""
    uid = f"facepi_household_{household_id}"
    device = {"identifiers": [uid], "name": f"facepi household {household_id}", "manufacturer": "facepi",
              "model": "facepi household", "sw_version": __version__}
    common = {"device": device, "origin": {"name": "facepi", "sw_version": __version__}}

    def entity(component: str, key: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return (f"{prefix}/{component}/{uid}/{key}/config",
                {"unique_id": f"{uid}_{key}", "default_entity_id": f"{component}.{uid}_{key}", **fields, **common})

    configs = dict([entity("binary_sensor", "anyone", name="Someone at any door", state_topic=f"{topic}/anyone",
                           device_class="occupancy")])
    for name in people:
        key = person_key(name, keys)
        seen = f"{topic}/seen/{key}"
        configs.update([
            entity("sensor", f"seen_{key}", name=f"{name} last seen", state_topic=seen,
                   value_template="{{ value_json.camera_name }}", json_attributes_topic=seen,
                   icon="mdi:map-marker-account"),
            entity("sensor", f"seen_at_{key}", name=f"{name} last seen at", state_topic=seen,
                   value_template="{{ value_json.time }}", device_class="timestamp", icon="mdi:clock-check"),
        ])
    return configs


MANIFEST_TOPICS = 2000  # topics one manifest may list: tens of people make ~4 each; anything beyond is ignored
MANIFEST_BYTES = 200_000


def manifest(topics: set[str]) -> str:
    """What a door publishes (retained, ``<base>/entities``): every retained topic of its entities, so that
    the next run clears those gone meanwhile without reading anything else under the discovery prefix."""
    return json.dumps({"v": 1, "topics": sorted(topics)}, separators=(",", ":"))


def manifest_topics(payload: bytes, allowed: Any) -> list[str]:
    """The topics a manifest lists that ``allowed(topic)`` (this door's own namespace), at most
    MANIFEST_TOPICS; [] for anything malformed or too large (a manifest written by someone else can at most
    have this door clear topics of its own namespace that it does not use now)."""
    if len(payload) > MANIFEST_BYTES:
        return []
    try:
        d = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    topics = d.get("topics") if isinstance(d, dict) else None
    if not isinstance(topics, list):
        return []
    return [t for t in topics[:MANIFEST_TOPICS] if isinstance(t, str) and "+" not in t and "#" not in t
            and allowed(t)]


def is_household(topic: str, prefix: str, household_id: str) -> bool:
    return is_ours(topic, prefix, f"household_{household_id}")
