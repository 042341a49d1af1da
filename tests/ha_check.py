"""Run by a Home Assistant Core venv: facepi's discovery payloads through Home Assistant's own code.

    <ha-venv>/bin/python tests/ha_check.py < cases.json

Input: {"configs": {topic: payload}, "renders": [[topic, template_key, mqtt_payload], ...],
"commands": [[topic, template_key, value, entity_id, attributes], ...],
"attributes": [[topic, mqtt_payload], ...]}.
For every config, the platform's MQTT ``DISCOVERY_SCHEMA`` (what HA applies to a
discovery message); for every render, the template as HA renders it
(``Template.async_render_with_possible_json_value``, with ``value_json``); for every command,
the ``command_template`` through HA's own ``MqttCommandTemplate``, with the entity's state and
attributes set in HA's state machine and the ``entity_id`` variable HA's MQTT entities pass; for every
attributes case, a message on the entity's ``json_attributes_topic`` as HA's MQTT mixin takes it
(``MqttValueTemplate`` of ``json_attributes_template``, then ``json_loads``: a dict, or HA's warning).
Every WARNING or worse that Home Assistant's own loggers emit meanwhile is reported too.
Output (stdout, JSON): {"valid": {topic: error or null}, "rendered": [text or error, ...],
"commands": [payload or error, ...], "attributes": [dict or HA's warning, ...], "warnings": [text, ...]}.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import tempfile


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append(f"{record.name}: {record.getMessage()}")


async def main() -> None:
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.template import Template

    cases = json.load(sys.stdin)
    collect = Collect()
    logging.getLogger("homeassistant").addHandler(collect)
    hass = HomeAssistant(tempfile.mkdtemp())  # newer Home Assistant validates templates against a running hass
    valid: dict[str, str | None] = {}
    for topic, payload in cases["configs"].items():
        platform = topic.split("/")[1]
        module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
        try:
            module.DISCOVERY_SCHEMA(dict(payload))
            valid[topic] = None
        except Exception as e:  # noqa: BLE001 (reported back, whatever it is)
            valid[topic] = f"{type(e).__name__}: {e}"
    rendered = []
    for topic, key, mqtt_payload in cases["renders"]:
        template = Template(cases["configs"][topic][key], hass)
        try:
            rendered.append(template.async_render_with_possible_json_value(mqtt_payload, "<error>"))
        except Exception as e:  # noqa: BLE001
            rendered.append(f"<{type(e).__name__}: {e}>")
    from homeassistant.components.mqtt.models import MqttCommandTemplate

    commands = []
    for topic, key, value, entity_id, attributes in cases.get("commands", []):
        hass.states.async_set(entity_id, "", attributes)
        template = MqttCommandTemplate(Template(cases["configs"][topic][key], hass), hass=hass)
        try:
            commands.append(template.async_render(value, variables={"entity_id": entity_id}))
        except Exception as e:  # noqa: BLE001
            commands.append(f"<{type(e).__name__}: {e}>")
    from homeassistant.components.mqtt.models import MqttValueTemplate
    from homeassistant.helpers.json import json_loads

    attributes = []
    for topic, mqtt_payload in cases.get("attributes", []):  # as mixins.MqttAttributes takes a message
        tpl = cases["configs"][topic].get("json_attributes_template")
        payload = MqttValueTemplate(Template(tpl, hass) if tpl else None,
                                    hass=hass).async_render_with_possible_json_value(mqtt_payload)
        try:
            loaded = json_loads(payload) if isinstance(payload, str) else None
            attributes.append(loaded if isinstance(loaded, dict) else "JSON result was not a dictionary")
        except ValueError:
            attributes.append(f"Erroneous JSON: {payload}")
    print(json.dumps({"valid": valid, "rendered": rendered, "commands": commands, "attributes": attributes,
                      "warnings": collect.said}))


if __name__ == "__main__":
    asyncio.run(main())
