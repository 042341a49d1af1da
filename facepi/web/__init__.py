"""``facepi web``: the household's page, served from the Pi (``facepi-web.service``).

People with their enrolled faces, photos added from a phone, the door's recent events with
their face crops, the visitors: every change through ``facepi.identity.family`` (origin
``web`` in the journal), which the running daemons pick up as they pick up a command line
change. It meets the door loop only through the gallery's database: the page imports the
identity layer and the vision core (for uploads, loaded only then), never the loop or MQTT.
"""
