"""configs/trainer/stop_at_target.yaml: a run stops at the first validation that reaches the target accuracy."""

from __future__ import annotations

from conftest import REPO, config_run_args, run_main

from lightning_cnn.runs.record import read_record

PRESET = str(REPO / "configs" / "trainer" / "stop_at_target.yaml")


def test_a_run_stops_once_validation_reaches_the_target(synthetic_data_dir, tmp_path, capsys):
    args = config_run_args("quickstart.yaml", synthetic_data_dir, tmp_path / "logs", "--trainer.max_epochs", "3")
    target = ["--config", PRESET, "--trainer.callbacks.stopping_threshold", "0.3"]
    assert run_main("fit", *args, *target, capsys=capsys)[0] == 0
    record = read_record(tmp_path / "logs" / "quickstart" / "version_0")
    first_epoch = record["curves"]["val/acc"][0][1]
    assert first_epoch >= 0.3  # reached after the first epoch ...
    assert record["epochs"] == 1 and record["status"] == "finished"  # ... so the other two never ran

    unreachable = ["--config", PRESET, "--trainer.callbacks.stopping_threshold", "1.01"]  # above any accuracy
    args = config_run_args("quickstart.yaml", synthetic_data_dir, tmp_path / "more", "--trainer.max_epochs", "2")
    assert run_main("fit", *args, *unreachable, capsys=capsys)[0] == 0
    record = read_record(tmp_path / "more" / "quickstart" / "version_0")
    assert record["epochs"] == 2  # never reached: the run trains its whole budget
