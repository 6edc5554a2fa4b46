"""A rejected option value gets one line naming the option, the value and what it accepts."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_synthetic_mnist, run_main

from lightning_cnn.option_errors import describe, one_line, option_hint

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
# (arguments, words the one error line must contain)
CASES = {
    "union of a count and a fraction": (["--data.val_split", "1.0"], ["data.val_split=1.0", "integer >= 0", "(0, 1)"]),
    "literal choices": (["--trainer.precision", "banana"], ["trainer.precision=banana", "'bf16-mixed'", "32"]),
    "nested dataclass field": (["--data.augmentation.degrees", "-5"], ["data.augmentation.degrees=-5", ">= 0"]),
    "with an equals sign": (["--data.augmentation.degrees=-5"], ["data.augmentation.degrees=-5", ">= 0"]),
    "plain integer": (["--trainer.max_epochs", "x"], ["trainer.max_epochs=x", "an integer"]),
    "plain float": (["--model.label_smoothing", "x"], ["model.label_smoothing=x", "a number"]),
    "a callback's option": (["--checkpoint.save_top_k", "x"], ["checkpoint.save_top_k=x", "an integer"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_rejected_value_is_one_line_with_key_value_and_what_is_accepted(case, tmp_path, capsys):
    extra, words = CASES[case]
    code, _, err = run_main("fit", "--config", QUICKSTART, "--data.data_dir", str(tmp_path), *extra, capsys=capsys)
    assert code == 2, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err
    assert err.strip().splitlines()[-1] == error_lines[0]  # nothing of the type tree after it
    for word in words:
        assert word in error_lines[0], error_lines[0]


def test_a_bad_value_in_a_config_file_is_still_one_line(tmp_path, capsys):
    config = yaml.safe_load(Path(QUICKSTART).read_text())
    config["data"] = {"data_dir": str(make_synthetic_mnist(tmp_path / "data")), "val_split": 1.5}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_main("fit", "--config", str(tmp_path / "bad.yaml"), capsys=capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert (
        last == "error: data.val_split=1.5 in the config is not accepted; use an integer >= 0 or a number in (0, 1) "
        "(see --help)"
    )


def test_hints_and_their_descriptions():
    assert describe(option_hint("data.val_split")) == "an integer >= 0 or a number in (0, 1)"
    assert describe(option_hint("data.augmentation.scale")) == "a number in [0, 1]"
    assert option_hint("data.no_such_option") is None
    assert option_hint("trainer.max_epochs") is not None


def test_messages_that_are_one_line_already_are_kept():
    assert one_line("unrecognized arguments: --trainer.epochs 3", ["--trainer.epochs", "3"]) == (
        "unrecognized arguments: --trainer.epochs 3"
    )


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("--model.optimizer.init_args.lrr=0.1", "model.optimizer.init_args.lrr is not an option of torch.optim.Adam"),
        ("--data.batch_sise=3", "data.batch_sise is not an option of lightning_cnn.MNISTDataModule"),
    ],
    ids=["optimizer", "data"],
)
def test_a_misspelt_option_of_a_chosen_class_is_named_in_one_line(option, line, capsys):
    code, _, err = run_main("fit", "--config", QUICKSTART, option, "--print_config", capsys=capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == f"error: {line}; check its spelling (see --help for the options)"
