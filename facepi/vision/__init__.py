"""The vision core: a photo or frame in, aligned faces and their embeddings out.

``images`` reads photos (HEIC too) and bounds their size, ``detect`` is MTCNN,
``align`` the 5-point similarity, ``embed`` the embedding model, ``faces`` the
pipeline that chains them, ``photos`` "folder of people -> embeddings", and
``runtime`` the TFLite interpreter and the model manifest. Nothing here knows about
galleries, doors or MQTT.
"""
