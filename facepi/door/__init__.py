"""The door service: frames from a camera to events on MQTT, kept alive by systemd.

``capture`` and ``sources`` read cameras and files, ``motion`` gates detection,
``track`` follows faces between frames, ``daemon`` runs the loop (with ``announce``,
``learning`` and ``reload`` beside it), ``publish``/``mqtt`` send events and take
commands, ``homeassistant`` describes it all to Home Assistant, ``notify`` talks to
systemd. Uses vision and identity.
"""
