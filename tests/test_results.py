"""The results page shows the logged accuracy of each experiment beside its tutorial's figure."""

from conftest import config_run_args, run_cli

from lightning_cnn.runs.summary import collect_runs
from lightning_cnn.tools.results import REPORTED, results_markdown


def test_results_page_reads_its_numbers_from_the_run_logs(synthetic_data_dir, tmp_path):
    # As the tutorial: trained on every training image, without validation.
    common = config_run_args("seed000_two_conv.yaml", synthetic_data_dir, tmp_path / "logs", train_batches=4)
    common += ["--data.val_split", "0"]
    fit = run_cli("fit", *common, "--trainer.max_epochs", "1", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-2000:]
    # As the tutorial: trained on every training image without validation, tested on last.ckpt.
    test = run_cli("test", *common, "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-2000:]

    (run,) = collect_runs(tmp_path / "logs")
    assert run.best_val_acc is None
    page = results_markdown(tmp_path / "logs")
    row = next(line for line in page.splitlines() if line.startswith("| `seed000_two_conv`"))
    assert f"{100 * run.test_acc:.2f}% (1 run)" in row
    gap = 100 * (run.test_acc - REPORTED["seed000_two_conv"].value)
    assert f"{gap:+.2f} pp" in row
    assert "TwoConvNet" in row and "8,490" in row and "SGD lr 0.01" in row
    assert "CPU" in row  # the hardware the run logged
    assert "`seed000_three_conv`" in page.split("Not run yet:")[1]
