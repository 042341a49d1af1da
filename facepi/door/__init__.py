"""The door service: frames from a camera to events on MQTT, kept alive by systemd.

``sources`` reads cameras and files and ``capture`` runs one in its thread; ``motion``
and ``gating`` decide where to detect; ``track`` follows faces between frames;
``daemon`` runs the loop and hands work to ``announce`` (events, presence),
``learning`` (visitors, namings, corrections), ``reload`` (the gallery kept fresh) and
``worker`` (a background thread). ``publish`` (stdout) and ``mqtt`` send events, with
``commands`` checking what comes back; ``homeassistant`` describes it all to Home
Assistant and ``ha_forget`` takes a gone camera off it; ``household`` shares the gallery
over the broker and ``doors`` keeps "someone at any door"; ``notify`` talks to systemd.
Uses vision and identity.
"""
