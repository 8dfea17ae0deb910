"""Test-wide setup: run from the repository root, where `lib`, `models` and `datasets` live."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Real scans shipped beside the checkout (../shared/data/real, or $VOXSEG_REAL_DATA); tests that
# need them skip, naming the folder, without.
REAL_DATA = Path(os.environ.get("VOXSEG_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))
