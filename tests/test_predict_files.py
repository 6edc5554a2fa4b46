"""Predicting on a user's image files: MNIST-style conversion, a CSV of predictions, unreadable files skipped."""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_synthetic_mnist, run_cli
from PIL import Image

from lightning_cnn.data.images import ImageReadError, find_images, load_image
from lightning_cnn.errors import DataError
from lightning_cnn.models import TwoConvNet


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    image = image.astype(np.float64)
    mass = image.sum()
    return float((image.sum(1) * np.arange(28)).sum() / mass), float((image.sum(0) * np.arange(28)).sum() / mass)


def bounding_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def photo_of(digit: np.ndarray, scale: int, background: int = 230, ink: int = 30) -> np.ndarray:
    """A large dark-on-light picture of an MNIST digit, off-center on a wider canvas, like a scan."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR), float)
    canvas = np.full((28 * scale + 90, 28 * scale + 140), background, float)
    canvas[20 : 20 + 28 * scale, 100 : 100 + 28 * scale] = background - big / 255 * (background - ink)
    return canvas.astype(np.uint8)


def real_test_digits(real_data_dir: Path, count: int) -> np.ndarray:
    with gzip.open(real_data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") as file:
        return np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]


def test_photos_of_real_digits_convert_back_to_mnist(real_data_dir, tmp_path):
    digits = real_test_digits(real_data_dir, 60)
    correlations = []
    for i, digit in enumerate(digits):
        suffix = (".png", ".jpg", ".bmp")[i % 3]
        path = tmp_path / f"digit{i}{suffix}"
        Image.fromarray(photo_of(digit, scale=2 + i % 4)).convert("RGB").save(path)
        converted = load_image(path)
        assert converted.shape == (1, 28, 28) and converted.dtype == torch.uint8
        correlations.append(np.corrcoef(converted[0].numpy().ravel(), digit.astype(float).ravel())[0, 1])
    # Integer centering and JPEG noise keep it from being exact; a wrong inversion, crop or
    # centering gives correlations near zero.
    assert np.mean(correlations) > 0.9, correlations
    assert min(correlations) > 0.5, correlations


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "CMYK"])
def test_any_mode_gives_a_centered_20_pixel_digit(mode, tmp_path):
    # A dark bar on white paper, tall and thin: it must come out light on black, 20 pixels tall,
    # narrower than tall (aspect kept), with its center of mass at (14, 14).
    paper = np.full((300, 200), 255, np.uint8)
    paper[40:240, 120:150] = 0
    image = Image.fromarray(paper)
    if mode == "RGBA":  # transparent background, opaque dark ink
        rgba = np.zeros((300, 200, 4), np.uint8)
        rgba[40:240, 120:150] = (0, 0, 0, 255)
        image = Image.fromarray(rgba, "RGBA")
    elif mode == "I;16":
        image = Image.fromarray(paper.astype(np.uint16) * 257)  # 16-bit grayscale
    else:
        image = image.convert(mode)
    path = tmp_path / ("digit.png" if mode != "CMYK" else "digit.jpg")
    image.save(path)
    converted = load_image(path)[0].numpy()
    height, width = bounding_box(converted)
    assert height == 20 and 1 <= width <= 5
    assert converted[0, 0] == 0 and converted.max() == 255
    row, col = center_of_mass(converted)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_blank_and_non_image_files_are_refused_one_by_one(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 200).save(blank)
    with pytest.raises(ImageReadError, match="no digit"):
        load_image(blank)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="cannot read"):
        load_image(text)


def test_find_images_takes_a_file_a_folder_or_a_glob(tmp_path):
    for name in ("b.png", "a.JPG", "c.bmp", "readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images(tmp_path)] == ["a.JPG", "b.png", "c.bmp"]
    assert [p.name for p in find_images(tmp_path / "b.png")] == ["b.png"]
    assert [p.name for p in find_images(str(tmp_path / "*.png"))] == ["b.png"]
    with pytest.raises(DataError, match="does not exist"):
        find_images(tmp_path / "missing.png")
    with pytest.raises(DataError, match="matches no"):
        find_images(str(tmp_path / "*.gif"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        find_images(empty)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A few steps of the two-conv net on the synthetic set: (working folder, checkpoint)."""
    root = tmp_path_factory.mktemp("predict")
    data_dir = make_synthetic_mnist(root / "data")
    result = run_cli(
        *("fit", "--model.backbone", "lightning_cnn.models.TwoConvNet", "--data.data_dir", str(data_dir)),
        *("--data.val_split", "100", "--trainer.max_steps", "3", "--trainer.accelerator", "cpu"),
        *("--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(root / "logs")),
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, root / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"


def expected_probabilities(checkpoint: Path, paths: list[Path]) -> torch.Tensor:
    """The checkpoint's class probabilities for the files, computed here without the CLI."""
    network = TwoConvNet().eval()
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    network.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    images = torch.stack([load_image(p) for p in paths]).float() / 255
    with torch.no_grad():
        return network((images - 0.1307) / 0.3081).softmax(dim=1)  # the default normalization


def write_pictures(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, suffix in enumerate((".png", ".jpg", ".bmp", ".png")):
        paper = np.full((80 + 20 * i, 60), 250, np.uint8)
        top, left = rng.integers(5, 30), rng.integers(5, 30)
        paper[top : top + 40, left : left + 6 + 5 * i] = 20
        paths.append(folder / f"digit{i}{suffix}")
        Image.fromarray(paper).convert("RGB" if suffix == ".jpg" else "L").save(paths[-1])
    return paths


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_predict_writes_a_csv_row_per_image(trained, tmp_path):
    root, checkpoint = trained
    paths = write_pictures(tmp_path / "pictures")
    output = tmp_path / "out" / "predictions.csv"
    result = run_cli(
        *("predict", "--model.backbone", "lightning_cnn.models.TwoConvNet", "--ckpt_path", str(checkpoint)),
        *("--data.predict_path", str(tmp_path / "pictures")),
        *("--predictions.output", str(output), "--trainer.logger", "false"),
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(output)
    assert [row["path"] for row in rows] == [str(p) for p in sorted(paths)]
    probabilities = torch.tensor([[float(row[f"probability_{k}"]) for k in range(10)] for row in rows])
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(rows)), atol=1e-4)
    assert [int(row["prediction"]) for row in rows] == probabilities.argmax(dim=1).tolist()
    expected = expected_probabilities(checkpoint, sorted(paths))
    assert torch.allclose(probabilities, expected, atol=1e-5)


def test_unreadable_files_are_reported_and_skipped_with_a_failing_exit_code(trained, tmp_path):
    root, checkpoint = trained
    paths = write_pictures(tmp_path / "pictures")
    (tmp_path / "pictures" / "broken.png").write_bytes(b"\x89PNG truncated")
    Image.new("L", (40, 40), 255).save(tmp_path / "pictures" / "blank.bmp")
    output = tmp_path / "predictions.csv"
    result = run_cli(
        *("predict", "--model.backbone", "lightning_cnn.models.TwoConvNet", "--ckpt_path", str(checkpoint)),
        *("--data.predict_path", str(tmp_path / "pictures" / "*")),
        *("--predictions.output", str(output), "--trainer.logger", "false"),
        cwd=root,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "broken.png" in result.stderr and "blank.bmp" in result.stderr
    assert "2 files could not be read" in result.stderr
    assert sorted(row["path"] for row in read_csv(output)) == sorted(str(p) for p in paths)
