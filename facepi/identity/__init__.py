"""Identity: who is family, and the rule that says whether a face is one of them.

``gallery`` is the in-memory gallery, ``store`` its SQLite file (faces, journal,
visitors), ``family`` the one guarded path for every change to who is family,
``enrol`` the checks a new photo must pass, ``classify`` the decision rule and its
calibration, ``health`` the gallery check and contact sheet, ``visitors`` the
strangers met at the door, ``recognize`` a face pipeline joined to a gallery.
Uses the vision core; knows nothing of cameras or MQTT.
"""
