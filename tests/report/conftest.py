"""Shared pieces of the report tests: two tiny real runs of demo.yaml (train, then `--mode test` on
its best checkpoint), and a headless chromium driven by selenium (WebGL2 through SwiftShader)."""
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000"]


def main_py(*args):
    out = subprocess.run([sys.executable, "main.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """{"a": (train dir, test dir), "b": (...)}: two small real runs that differ in length and
    learning rate, so their scores and curves differ. Test mode writes each test dir's report.html."""
    pytest.importorskip("plyfile", reason="test mode exports PLYs with plyfile (pip install plyfile)")
    root = tmp_path_factory.mktemp("report_runs")
    small = [f"data.cache_dir={root / 'cache'}", "train.progress=false", "eval.plots=false"]
    runs = {}
    for name, iterations, lr in (("a", 3, 0.01), ("b", 2, 0.003)):
        train, test = root / f"train_{name}", root / f"test_{name}"
        main_py("--config", "demo.yaml", "--output-dir", train, f"train.iterations={iterations}",
                f"train.val_every={iterations}", f"train.ckpt_every={iterations}", "train.log_every=1",
                f"train.optimizer.lr={lr}", *small)
        main_py("--config", "demo.yaml", "--mode", "test", "--weights", train / "best.pth", "--output-dir", test,
                *small)
        runs[name] = (train, test)
    return runs


@pytest.fixture(scope="session")
def browser():
    """A selenium-driven headless chromium with a fresh profile; browser console logs kept."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium / chromedriver on PATH (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium drives chromium (pip install '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="voxseg-chromium-")
    for flag in BROWSER_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
