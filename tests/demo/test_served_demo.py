"""`python -m larp_hf.demo demo FOLDER` served on localhost, driven by gradio_client and by a headless Chromium."""

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from larp_hf import LarpPipeline
from larp_hf.demo import class_names

from .conftest import served


gradio_client = pytest.importorskip("gradio_client", reason='the demo tests need Gradio: pip install -e ".[test]"')
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# A real pipeline for the screenshot in docs/ (the test falls back to the tiny one), and where to save the screenshot.
PIPELINE_ENV, SCREENSHOT_ENV = "LARP_DEMO_PIPELINE", "LARP_DEMO_SCREENSHOT"


@pytest.fixture(scope="module")
def pipeline_dir(class_conditional_pipeline_dir):
    return Path(os.environ.get(PIPELINE_ENV) or class_conditional_pipeline_dir)


def _pixels(path) -> list:
    return np.asarray(PIL.Image.open(path)).tolist()


def test_gradio_client_gets_the_pipelines_images_for_a_seed_and_the_app_survives_invalid_settings(
    pipeline_dir, tmp_path
):
    pipeline = LarpPipeline.from_pretrained(pipeline_dir)
    size = pipeline.image_processor.output_size  # any tokenizer's images, square or not
    with served(["-m", "larp_hf.demo", "demo", pipeline_dir], tmp_path / "demo.log") as (url, _):
        client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        settings = {"temperature": 0.9, "top_k": 10, "top_p": 0.95}
        gallery, grid, info, files = client.predict(num_images=5, seed=7, **settings, api_name="/generate")
        expected = pipeline(num_images=5, seed=7, **settings)
        assert len(gallery) == 5 and all(
            PIL.Image.open(item["image"]).size == (size["width"], size["height"]) for item in gallery
        )
        assert [_pixels(item["image"]) for item in gallery] == [np.asarray(image).tolist() for image in expected.images]
        names = class_names(pipeline)  # every class in turn, each image captioned with its class's name
        assert [item["caption"] for item in gallery] == [names[i % len(names)] if names else None for i in range(5)]
        assert re.fullmatch(r"5 images in [\d.]+ s \([\d.]+ images/s\) · seed 7", info)
        grid_png, codes_npy = sorted(files, key=lambda path: Path(path).suffix == ".npy")
        assert Path(grid_png).name == "larp_samples.png" and _pixels(grid_png) == _pixels(grid)
        assert np.array_equal(np.load(codes_npy), expected.codes.numpy())

        # The pipeline's own message, no traceback; then the app goes on serving.
        with pytest.raises(
            gradio_client.exceptions.AppError, match=r"`temperature` must be a finite number > 0, got 0"
        ):
            client.predict(num_images=2, temperature=0.0, api_name="/generate")
        # Class and guidance are the page's for class-conditional priors (the tiny one; LARP_DEMO_PIPELINE may not be).
        classes = {"class_label": 1, "guidance_scale": 2.0} if pipeline.num_classes else {}
        if pipeline.num_classes:
            with pytest.raises(gradio_client.exceptions.AppError, match=r"`guidance_scale` > 1 steers samples towards"):
                # class -2, the unconditional model, cannot be guided
                client.predict(num_images=2, class_label=-2, guidance_scale=3.0, api_name="/generate")

        # A random seed is reported, and it reproduces the images (with a class and guidance where there are classes).
        _, _, info, files = client.predict(num_images=2, random_seed=True, **classes, api_name="/generate")
        seed = int(info.rsplit("seed ", 1)[1])
        codes = np.load(next(path for path in files if path.endswith(".npy")))
        class_labels, guidance_scale = classes.get("class_label"), classes.get("guidance_scale")
        expected = pipeline(num_images=2, seed=seed, class_labels=class_labels, guidance_scale=guidance_scale)
        assert np.array_equal(codes, expected.codes.numpy())


def _chromium():
    """A headless Debian Chromium driven by Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason='the browser test needs Selenium: pip install -e ".[test]"'
    )
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(
            f"the browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
            "`make setup` installs them when run as root, or `sudo apt-get install chromium chromium-driver`"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    # The driver's path given, Selenium Manager never tries to download one.
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)


def test_browser_moves_a_slider_generates_shows_the_gallery_and_an_invalid_value_shows_the_pipelines_error(
    pipeline_dir, tmp_path, capsys
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium()
    try:
        with served(["-m", "larp_hf.demo", "demo", pipeline_dir], tmp_path / "demo.log") as (url, launched_at):
            server_ready = time.monotonic() - launched_at
            browser.get(url)
            wait = WebDriverWait(browser, 60)
            generate = wait.until(lambda page: page.find_element(By.ID, "larp-generate"))
            slider = browser.find_element(By.CSS_SELECTOR, "#larp-temperature input[type=range]")
            before = float(slider.get_attribute("value"))
            slider.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # two steps of 0.05
            number = browser.find_element(By.CSS_SELECTOR, "#larp-temperature input[type=number]")
            assert float(number.get_attribute("value")) == pytest.approx(before - 0.1)

            generate.click()
            wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#larp-gallery img")) == 16)
            first_image = time.monotonic() - launched_at
            assert re.match(r"16 images in [\d.]+ s", browser.find_element(By.ID, "larp-info").text)
            browser.save_screenshot(str(tmp_path / "demo.png"))
            if os.environ.get(SCREENSHOT_ENV):
                browser.save_screenshot(os.environ[SCREENSHOT_ENV])

            number.send_keys(Keys.CONTROL, "a")
            number.send_keys("0", Keys.TAB)  # temperature 0: the slider allows it, the pipeline does not
            generate.click()
            message = "must be a finite number > 0, got 0"
            wait.until(lambda page: message in page.find_element(By.TAG_NAME, "body").text)
            assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
    finally:
        browser.quit()
    with capsys.disabled():
        print(
            f"\n[demo] time to first image: {first_image:.1f} s from launch "
            f"(server answering after {server_ready:.1f} s)"
        )
