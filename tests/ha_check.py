"""Run by a Home Assistant Core venv: facepi's discovery payloads through Home Assistant's own code.

    <ha-venv>/bin/python tests/ha_check.py < cases.json

Input: {"configs": {topic: payload}, "renders": [[topic, template_key, mqtt_payload], ...]}.
For every config, the platform's MQTT ``DISCOVERY_SCHEMA`` (what HA applies to a
discovery message); for every render, the template as HA renders it
(``Template.async_render_with_possible_json_value``, with ``value_json``).
Output (stdout, JSON): {"valid": {topic: error or null}, "rendered": [text or error, ...]}.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile


async def main() -> None:
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.template import Template

    cases = json.load(sys.stdin)
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
    print(json.dumps({"valid": valid, "rendered": rendered}))


if __name__ == "__main__":
    asyncio.run(main())
