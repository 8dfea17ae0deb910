"""Helpers of the report tests: load a page in the driven chromium, read its canvas pixels."""
import io
from pathlib import Path

import numpy as np


def open_page(driver, path: Path):
    """Loads `path` from file:// and waits for the viewer's first frame (when the page has scenes);
    returns the console entries logged so far (cleared from the driver's buffer)."""
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import TimeoutException

    driver.get(Path(path).resolve().as_uri())
    if driver.find_elements("id", "voxseg-canvas"):
        try:
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.firstFrameMs"))
        except TimeoutException:
            raise AssertionError(f"{path}: no first frame within 60 s; console: {driver.get_log('browser')}") from None
    return driver.get_log("browser")


def errors_in(log: list) -> list:
    return [entry for entry in log if entry["level"] in ("SEVERE", "ERROR")]


def canvas_pixels(driver) -> np.ndarray:
    """uint8 [H, W, 3] of the viewer canvas as the browser composited it (a screenshot)."""
    from PIL import Image

    driver.execute_script("window.scrollTo(0, 0)")
    png = driver.find_element("id", "voxseg-canvas").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def colour_count(pixels: np.ndarray, rgb, tolerance: int = 2) -> int:
    """Pixels within `tolerance` of `rgb` in every channel."""
    return int((np.abs(pixels.astype(np.int16) - np.asarray(rgb, dtype=np.int16)) <= tolerance).all(axis=2).sum())


def wait_frames(driver, after: int):
    """Waits until the viewer drew a frame after frame number `after`."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: int(d.execute_script("return document.body.dataset.frames")) > after)


def frames(driver) -> int:
    return int(driver.execute_script("return document.body.dataset.frames"))
