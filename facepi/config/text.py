"""The configuration as TOML text: ``check-config``'s output (it loads back as the same configuration,
secrets masked) and the example config generated from the schema."""

from __future__ import annotations

import dataclasses
from typing import Any

from facepi.config.schema import SECTION_HELP, Config, sections

EXAMPLE_HEADER = """\
# facepi configuration: /etc/facepi/facepi.toml. Check it with: facepi check-config
# Every key can also be set from the environment as FACEPI_<SECTION>_<KEY>
# (e.g. FACEPI_MQTT_HOST). Passwords never live in this file: the MQTT password comes
# from FACEPI_MQTT_PASSWORD, mqtt.password_file or the systemd credential mqtt_password;
# the camera's from FACEPI_SOURCE_PASSWORD, source.password_file or camera_password.
# Generated from facepi/config/schema.py (config.example()): every key, its default and what it does.
"""


def _toml(cfg: Config, help: bool) -> str:
    """The configuration as TOML (tomli_w writes the values, so the text loads back as the same
    configuration), URL logins masked; with ``help``, each key's help text above it."""
    import textwrap

    import tomli_w

    from facepi.redact import mask

    def toml_value(value: Any) -> str:
        if isinstance(value, list):  # one line: tomli_w writes an array over several
            return "[" + ", ".join(toml_value(v) for v in value) + "]"
        return tomli_w.dumps({"v": mask(value) if isinstance(value, str) else value})[len("v = "):].rstrip("\n")

    def lines(obj: Any) -> list[str]:
        out = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") or dataclasses.is_dataclass(value):
                continue
            if help:
                m = f.metadata
                allowed = f" ({m['min']:g} to {m['max']:g})" if m.get("min") is not None else \
                    f" ({', '.join(m['choices'])})" if m.get("choices") else ""
                out += [f"# {line}" for line in textwrap.wrap(m["help"] + allowed, 108)]
            out.append(f"{f.name} = {toml_value(value)}")
        return out

    text = lines(cfg)
    for name, section in sections(cfg).items():
        text += ["", *([f"# [{name}]: {SECTION_HELP[name]}"] if help else []), f"[{name}]", *lines(section)]
    return "\n".join(text) + "\n"


def describe(cfg: Config) -> str:
    """The effective configuration as TOML that loads back as the same configuration (check-config),
    with passwords and URL logins masked."""
    return (_toml(cfg, help=False) + f"# mqtt password: {'set' if cfg.mqtt_password else 'not set'}\n"
            f"# camera password: {'set' if cfg.camera_password else 'not set'}\n"
            f"# household key: {'set' if cfg.household_key else _no_key(cfg)}")


def example() -> str:
    """systemd/facepi.toml.example: every section and key with its help text, from this schema, so the
    example cannot drift from what check-config prints (tests/test_config.py compares them)."""
    cfg = Config(camera_id="front_door", camera_name="Front door")
    cfg.source.uri = "picamera2"
    return EXAMPLE_HEADER + "\n" + _toml(cfg, help=True)


def _no_key(cfg: Config) -> str:
    if not cfg.household.id:
        return "not set"
    return ("not readable here: the service reads its credential household_key (LoadCredential=); "
            "set household.key_file to check it from the command line")
