"""facepi-convert: the offline converter (workstation, needs TensorFlow).

Turns the seed's MTCNN weights and FaceNet graph into TFLite files in
``models/`` and proves each one against the TensorFlow reference on real faces.
"""
