"""The on-device package must run on the TFLite runtime alone."""

import subprocess
import sys

from conftest import ROOT


def test_facepi_and_its_cli_do_not_import_tensorflow():
    code = (
        "import sys, facepi, facepi.cli, facepi.door.daemon, facepi.identity.family, facepi.vision.images\n"
        "from facepi.vision.detect import Detector\n"
        "d = Detector()\n"
        "import numpy as np\n"
        "d.detect(np.zeros((120, 160, 3), np.uint8))\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cli_help_runs_without_tensorflow():
    code = ("import sys\nfrom facepi.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
