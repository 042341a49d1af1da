"""Identity: who is family, and the rule that says whether a face is one of them.

``gallery`` is the in-memory gallery, ``store`` its SQLite file (faces, journal,
visitors), ``family`` the one guarded path for every change to who is family,
``enrol`` the checks a new photo must pass and the calibration, ``classify`` the
decision rule, ``recognize`` a gallery joined to its face pipeline, ``health`` the
gallery check and contact sheet, ``recent`` the door's last recognitions (what "that
wasn't X" corrects). Visitors met at the door: ``visitors`` (the join rule),
``visitor_book`` (kept in the store), ``visitor_file`` (an earlier .npz, imported once).
The household: ``records`` (signed per-person records) and ``sync`` (applying them to
this gallery, finding what to send). Uses the vision core; knows nothing of cameras or MQTT.
"""
