"""facepi: face recognition for an always-on Raspberry Pi door camera.

The on-device package. It runs on the TFLite runtime alone and must never
import TensorFlow (the offline converter in ``convert/`` does that).
Pipeline: source -> detect -> align -> embed -> classify -> publish.
"""

__version__ = "0.1.0"
