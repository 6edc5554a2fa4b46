"""lr_find: Lightning's finder on a config; its suggestion lies in its range, and the config it writes loads."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO, run_main
from PIL import Image


def finder_args(config: str, data_dir, tmp_path, *extra: str) -> list[str]:  # noqa: ANN001
    return [
        "lr_find",
        "--config", str(REPO / "configs" / config),
        "--data.data_dir", str(data_dir),
        "--data.val_split", "100",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--num_training", "40",
        "--min_lr", "1e-5",
        "--max_lr", "0.2",
        "--output", str(tmp_path / "lr_find.png"),
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "key"),
    [("quickstart.yaml", ("scheduler", "max_lr")), ("seed000_two_conv.yaml", ("optimizer", "lr"))],
    ids=["one-cycle max_lr", "optimizer lr"],
)
def test_the_suggestion_lies_in_the_range_and_the_written_config_loads(
    config, key, synthetic_data_dir, tmp_path, capsys
):
    written = tmp_path / "tuned.yaml"
    code, out, err = run_main(
        *finder_args(config, synthetic_data_dir, tmp_path, "--write_config", str(written)), capsys=capsys
    )
    assert code == 0, err[-3000:]
    suggestion = float(re.search(r"suggested learning rate: (\S+)", out).group(1))
    assert 1e-5 <= suggestion <= 0.2
    with Image.open(tmp_path / "lr_find.png") as image:
        assert image.format == "PNG"
    assert (tmp_path / "logs" / config.removesuffix(".yaml") / "lr_find").is_dir()  # the plot in TensorBoard too
    assert not list((tmp_path / "logs").rglob("version_*"))  # the finder's steps are not a run
    section, name = key
    code, out, err = run_main("fit", "--config", str(written), "--print_config", capsys=capsys)
    assert code == 0, err[-3000:]
    parsed = yaml.safe_load(out)["model"][section]["init_args"][name]
    assert parsed == pytest.approx(suggestion, rel=1e-2)


def test_a_range_that_does_not_rise_is_one_error_line(synthetic_data_dir, tmp_path, capsys):
    args = finder_args("quickstart.yaml", synthetic_data_dir, tmp_path, "--min_lr", "0.1", "--max_lr", "0.01")
    code, _, err = run_main(*args, capsys=capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: --min_lr 0.1 is not below --max_lr 0.01")
