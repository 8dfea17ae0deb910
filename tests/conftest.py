"""Test-wide setup: run from the repository root, where `lib`, `models` and `datasets` live."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Real scans shipped beside the checkout (../shared/data/real); tests that need them skip without.
REAL_DATA = ROOT.parent / "shared" / "data" / "real"
