"""Inputs a user should be able to trust the tool with: export folders, every common image format, hostile checkpoints.

Each bad input ends in one ``error:`` line naming the problem and the fix, a non-zero exit and nothing
left behind; a checkpoint holding code is refused without running it and without advice to load it unsafely.
"""

from __future__ import annotations

import builtins
import csv
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_synthetic_mnist, run_main
from PIL import Image

from lightning_cnn.checkpoints import CheckpointError, load_checkpoint
from lightning_cnn.data.images import IMAGE_SUFFIXES, SUPPORTED_FORMATS, ImageReadError, find_images, load_image
from lightning_cnn.errors import DataError
from lightning_cnn.models import TwoConvNet


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic dataset, a config using it (no logger), a good untrained checkpoint; the working folder."""
    data_dir = make_synthetic_mnist(tmp_path / "data", num_train=200, num_test=50)
    config = {
        "model": {"backbone": {"class_path": "lightning_cnn.models.TwoConvNet"}},
        "data": {"data_dir": str(data_dir), "val_split": 50, "download": False},
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "logger": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    state = {f"backbone.{key}": value for key, value in TwoConvNet().state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "good.ckpt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def staging_folders(root: Path) -> list[Path]:
    return [path for path in root.rglob(".export-*")]


# --- (8) export: the output folder, and a missing --ckpt_path ------------------------------------------------


def export_args(output_dir: str) -> tuple[str, ...]:
    return ("export", "--config", "config.yaml", "--ckpt_path", "good.ckpt", "--output_dir", output_dir)


def test_export_into_an_existing_file_is_one_error_line_and_writes_nothing(workspace, capsys):
    taken = workspace / "taken.txt"
    taken.write_text("keep me\n")
    code, out, stderr = run_main(*export_args("taken.txt"), capsys=capsys)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "--output_dir taken.txt is a file" in line and "pass the path of a folder" in line, line
    assert taken.read_text() == "keep me\n"
    assert not staging_folders(workspace)


def test_export_below_a_file_is_one_error_line_and_writes_nothing(workspace, capsys):
    (workspace / "taken.txt").write_text("keep me\n")
    code, _, stderr = run_main(*export_args("taken.txt/export"), capsys=capsys)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "cannot be created" in line and "taken.txt is a file" in line, line
    assert (workspace / "taken.txt").read_text() == "keep me\n"


def test_export_to_a_folder_without_write_permission_stops_before_anything(workspace, capsys, monkeypatch):
    locked = (workspace / "locked").resolve()
    locked.mkdir()
    real_access = os.access
    # As root every folder is writable, so the permission is taken away where the export checks it.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).resolve() != locked and real_access(path, mode))
    code, _, stderr = run_main(*export_args("locked/new/export"), capsys=capsys)
    assert code == 1, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "cannot be written" in line and f"no permission to write in {Path('locked')}" in line, line
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write into any folder")
def test_export_to_a_read_only_folder_is_one_error_line(workspace, capsys):
    locked = workspace / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, stderr = run_main(*export_args("locked/export"), capsys=capsys)
    finally:
        locked.chmod(0o700)
    assert code == 1, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "cannot be written" in line, line
    assert list(locked.iterdir()) == []


def test_export_that_cannot_write_its_files_removes_the_folders_it_created(workspace, capsys, monkeypatch):
    pytest.importorskip("onnx")
    real_mkdtemp = tempfile.mkdtemp

    def refuse_inside_workspace(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own parameter name
        if dir is not None and Path(dir).resolve().is_relative_to(workspace.resolve()):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse_inside_workspace)
    code, _, stderr = run_main(*export_args("new/nested/export"), capsys=capsys)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "--output_dir new/nested/export cannot be written (Permission denied)" in line, line
    assert not (workspace / "new").exists()


def test_a_failed_export_leaves_no_folder_behind(workspace, monkeypatch):
    pytest.importorskip("onnx")
    import lightning_cnn.tools.export

    def fail(*args, **kwargs):
        raise RuntimeError("exported model.onnx differs from the checkpoint")

    monkeypatch.setattr(lightning_cnn.tools.export, "verify_export", fail)
    with pytest.raises(RuntimeError, match="differs"):
        run_main(*export_args("new/nested/export"))
    assert not (workspace / "new").exists()


def test_export_creates_missing_folders_and_leaves_only_its_files(workspace, capsys):
    pytest.importorskip("onnx")
    code, out, stderr = run_main(*export_args("new/nested/export"), capsys=capsys)
    assert code == 0, stderr[-3000:]
    exported = workspace / "new" / "nested" / "export"
    assert sorted(path.name for path in exported.iterdir()) == ["export.json", "model.onnx", "model.pt"]
    assert "exported good.ckpt" in out


def test_export_without_a_checkpoint_is_one_line_not_the_whole_usage(workspace, capsys):
    code, _, stderr = run_main("export", "--config", "config.yaml", "--output_dir", "out", capsys=capsys)
    assert code == 2, stderr
    (line,) = error_lines(stderr)
    assert "ckpt_path" in stderr[stderr.index(line) :], stderr
    # jsonargparse may put the key on the line after "error:" and add a --help tip: a few lines, not ~89.
    assert len([text for text in stderr.splitlines() if text.strip()]) <= 4, stderr
    assert "usage:" not in stderr, stderr
    assert not (workspace / "out").exists()


def test_export_help_still_shows_the_usage(capsys):
    from lightning_cnn.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    assert "--output_dir" in capsys.readouterr().out


# --- (9) predict: GIF, WebP and TIFF in folders and globs; other files named as skipped ---------------------


def digit_picture(kind: str = "bar", size: tuple[int, int] = (60, 80)) -> np.ndarray:
    """Dark ink on light paper: a vertical bar (a "1") or a horizontal one, off-center."""
    paper = np.full((size[1], size[0]), 245, np.uint8)
    if kind == "bar":
        paper[10:60, 20:28] = 15
    else:
        paper[30:38, 5:50] = 15
    return paper


def save_animation(path: Path, frames: list[np.ndarray], **options: object) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], **options)


def write_formats(folder: Path) -> dict[str, Path]:
    """One picture of the same digit in each format a folder now contributes."""
    folder.mkdir()
    picture = Image.fromarray(digit_picture())
    paths = {}
    for suffix in (".png", ".jpg", ".bmp", ".gif", ".webp", ".tif", ".TIFF"):
        paths[suffix] = folder / f"digit{suffix}"
        options = {"lossless": True} if suffix == ".webp" else {}
        picture.save(paths[suffix], **options)
    return paths


def test_every_supported_suffix_is_listed():
    assert {".gif", ".webp", ".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    for name in ("GIF", "WebP", "TIFF", "PNG", "JPEG", "BMP"):
        assert name in SUPPORTED_FORMATS


def test_a_folder_holds_gif_webp_and_tiff_and_names_every_other_file_as_skipped(tmp_path, capsys):
    paths = write_formats(tmp_path / "pictures")
    (tmp_path / "pictures" / "notes.txt").write_text("digits scanned on Monday\n")
    (tmp_path / "pictures" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "pictures" / "archive.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (tmp_path / "pictures" / "subfolder").mkdir()

    found = find_images(tmp_path / "pictures")
    assert found == sorted(paths.values())
    stderr = capsys.readouterr().err
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped: ")]
    folder = tmp_path / "pictures"
    assert sorted(skipped) == sorted(
        f"skipped: {folder / name} (not an image file: only names ending in .png, .jpg, .jpeg, .bmp, .gif, "
        ".webp, .tif or .tiff are read)"
        for name in (".DS_Store", "archive.zip", "notes.txt")
    ), stderr
    assert len(stderr.splitlines()) == 3, stderr  # no line for the subfolder, none for the images
    # Each of them reads as the same digit, whatever its format.
    reference = load_image(paths[".png"])
    for suffix, path in paths.items():
        if suffix != ".jpg":  # JPEG is lossy
            assert torch.equal(load_image(path), reference), suffix


def test_a_glob_takes_the_new_formats_and_names_the_other_files_it_matches(tmp_path, capsys):
    paths = write_formats(tmp_path / "pictures")
    (tmp_path / "pictures" / "notes.txt").write_text("x")
    assert find_images(str(tmp_path / "pictures" / "*")) == sorted(paths.values())
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped: {tmp_path / 'pictures' / 'notes.txt'} ("), skipped
    assert find_images(str(tmp_path / "pictures" / "*.gif")) == [paths[".gif"]]
    assert find_images(str(tmp_path / "pictures" / "*.tif*")) == sorted([paths[".tif"]])  # the glob is case-sensitive
    assert capsys.readouterr().err == ""  # a glob that matches images only names nothing as skipped


def test_a_file_named_directly_is_never_reported_as_skipped(tmp_path, capsys):
    path = tmp_path / "digit.tiff"
    Image.fromarray(digit_picture()).save(path)
    assert find_images(path) == [path]
    assert capsys.readouterr().err == ""


def test_a_folder_or_glob_of_other_files_only_is_one_error_naming_the_formats(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "b.csv").write_text("x")
    with pytest.raises(DataError) as error:
        find_images(folder)
    message = str(error.value)
    assert "holds no image files (it holds 2 other files, such as a.txt)" in message, message
    assert SUPPORTED_FORMATS in message and "\n" not in message
    with pytest.raises(DataError) as error:
        find_images(str(folder / "*"))
    message = str(error.value)
    assert "matches no PNG, JPEG, BMP, GIF, WebP or TIFF file (it matches 2 other files" in message, message


@pytest.mark.parametrize(
    ("suffix", "options"),
    [(".gif", {"duration": 100, "loop": 0}), (".webp", {"lossless": True, "duration": 100}), (".tiff", {})],
)
def test_of_an_animated_or_multi_page_file_the_first_frame_is_read(tmp_path, suffix, options):
    first, second = digit_picture("bar"), digit_picture("dash")
    animated = tmp_path / f"animated{suffix}"
    save_animation(animated, [first, second], **options)
    with Image.open(animated) as image:
        assert getattr(image, "n_frames", 1) == 2  # really two frames, so the test can tell them apart
    Image.fromarray(first).save(tmp_path / "first.png")
    Image.fromarray(second).save(tmp_path / "second.png")
    pixels = load_image(animated)
    assert torch.equal(pixels, load_image(tmp_path / "first.png"))
    assert not torch.equal(pixels, load_image(tmp_path / "second.png"))


def test_an_unreadable_file_names_the_supported_formats(tmp_path):
    broken = tmp_path / "broken.gif"
    broken.write_bytes(b"GIF89a truncated")
    with pytest.raises(ImageReadError) as error:
        load_image(broken)
    assert "cannot read" in str(error.value) and f"use a {SUPPORTED_FORMATS} file" in str(error.value)


def test_predict_on_a_folder_of_gif_webp_and_tiff_writes_a_row_each_and_names_the_rest(workspace, capsys):
    folder = workspace / "pictures"
    folder.mkdir()
    save_animation(folder / "a.gif", [digit_picture("bar"), digit_picture("dash")], duration=100)
    Image.fromarray(digit_picture("dash")).save(folder / "b.webp", lossless=True)
    save_animation(folder / "c.tif", [digit_picture("bar"), digit_picture("dash")])
    (folder / "readme.md").write_text("x")
    output = workspace / "predictions.csv"
    code, _, stderr = run_main(
        *("predict", "--config", "config.yaml", "--data.predict_path", "pictures"),
        *("--predictions.output", str(output)),
        capsys=capsys,
    )
    assert code == 0, stderr[-3000:]
    assert error_lines(stderr) == [], stderr[-3000:]
    with open(output, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [Path(row["path"]).name for row in rows] == ["a.gif", "b.webp", "c.tif"]
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and "readme.md (not an image file" in skipped[0], stderr[-3000:]


# --- (12) checkpoints that hold code or Python objects --------------------------------------------------------


MARKER = "payload-ran"


class Instance:
    """An arbitrary class: building it means importing and calling code from the file's say-so."""


class ShellPayload:
    """Unpickling runs a shell command, which would leave the marker file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class PrintPayload:
    def __reduce__(self):
        return (print, ("the payload ran",))


def module_function() -> None:
    """A function: the pickle holds a reference to code."""


def write_zip_checkpoint(path: Path, payload: object) -> None:
    state = {f"backbone.{key}": value for key, value in TwoConvNet().state_dict().items()}
    torch.save({"state_dict": state, "extra": payload}, path)


def hostile_files(folder: Path) -> dict[str, Path]:
    """Malicious checkpoints of every kind: torch zip files and plain pickles (protocol 0 and the newest)."""
    marker = folder / MARKER
    payloads = {
        "instance": Instance(),
        "reduce os.system": ShellPayload(marker),
        "reduce print": PrintPayload(),
        "module function": module_function,
        "builtins.eval": builtins.eval,
        "class": Instance,
    }
    files = {}
    for name, payload in payloads.items():
        files[f"zip {name}"] = folder / f"zip-{name.replace(' ', '_')}.ckpt"
        write_zip_checkpoint(files[f"zip {name}"], payload)
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        files[f"pickle {protocol} os.system"] = folder / f"plain{protocol}-system.ckpt"
        files[f"pickle {protocol} os.system"].write_bytes(pickle.dumps(ShellPayload(marker), protocol=protocol))
        files[f"pickle {protocol} instance"] = folder / f"plain{protocol}-instance.ckpt"
        files[f"pickle {protocol} instance"].write_bytes(pickle.dumps({"state_dict": {}, "x": Instance()}, protocol))
    files["pickle eval"] = folder / "plain-eval.ckpt"
    files["pickle eval"].write_bytes(pickle.dumps(builtins.eval))
    return files


HOSTILE = [
    *(f"zip {name}" for name in ("instance", "reduce os.system", "reduce print", "module function", "builtins.eval")),
    "zip class",
    *(
        f"pickle {protocol} {kind}"
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL)
        for kind in ("os.system", "instance")
    ),
    "pickle eval",
]


def test_the_variants_are_all_written(tmp_path):
    assert sorted(hostile_files(tmp_path)) == sorted(HOSTILE)


@pytest.mark.parametrize("variant", HOSTILE)
def test_a_checkpoint_holding_code_is_refused_with_our_message_and_nothing_runs(variant, tmp_path, capfd):
    path = hostile_files(tmp_path)[variant]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError) as error:
        warnings.simplefilter("always")
        load_checkpoint(path)
    assert not [warning for warning in caught if "pickle protocol" in str(warning.message)]
    message = str(error.value)
    assert message.startswith(f"{path} holds code or Python objects that a checkpoint should not hold"), message
    assert "it was not loaded" in message and "only a file from a source you trust" in message, message
    assert "weights_only" not in message and "False" not in message and "\n" not in message, message
    assert "torch.serialization" not in message and "add_safe_globals" not in message, message
    assert not (tmp_path / MARKER).exists()
    assert "the payload ran" not in capfd.readouterr().out


def test_the_shell_payload_is_real(tmp_path):
    """Unsafe loading does run it: so the test above, which finds no marker, can fail."""
    path = hostile_files(tmp_path)["pickle 2 os.system"]
    with pytest.raises(Exception):  # noqa: B017 - the legacy loader then fails on the payload's return value
        torch.load(path, weights_only=False)
    assert (tmp_path / MARKER).exists()


def test_files_that_are_no_pickle_at_all_are_not_a_checkpoint_without_torchs_advice(tmp_path):
    for name, content in (
        ("notes.ckpt", b"not a checkpoint\n"),
        ("random.ckpt", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
        ("plain-dict.ckpt", pickle.dumps({"state_dict": {}}, protocol=5)),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        message = str(error.value)
        assert "not a checkpoint" in message and "weights_only" not in message and "\n" not in message, message
        assert "holds code" not in message, message


@pytest.mark.parametrize("command", ["test", "predict", "fit", "export"])
def test_every_command_refuses_a_hostile_checkpoint_in_one_line(command, workspace, capsys):
    path = hostile_files(workspace)["zip reduce os.system"]
    extra = ("--output_dir", "out") if command == "export" else ("--trainer.max_steps", "1")
    code, _, stderr = run_main(command, "--config", "config.yaml", "--ckpt_path", str(path), *extra, capsys=capsys)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "weights_only" not in stderr, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "holds code or Python objects" in line, line
    assert not (workspace / MARKER).exists()
    assert not (workspace / "out").exists() and not (workspace / "lightning_logs").exists()
