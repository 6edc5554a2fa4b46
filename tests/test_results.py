"""The results page shows the logged accuracy of each experiment beside its tutorial's figure."""

from conftest import config_run_args, run_cli, run_main

from lightning_cnn.runs.summary import collect_runs
from lightning_cnn.tools.results import REPORTED, page_rows, results_markdown


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


def test_update_keeps_the_rows_of_experiments_no_longer_logged(synthetic_data_dir, tmp_path, capsys):
    common = config_run_args("quickstart.yaml", synthetic_data_dir, tmp_path / "logs", "--trainer.max_epochs", "1")
    assert run_main("fit", *common, capsys=capsys)[0] == 0
    assert run_main("test", *common, "--ckpt_path", "best", capsys=capsys)[0] == 0
    page = tmp_path / "results.md"
    old_quickstart = "| `quickstart` | TwoConvNet | 8,490 | an older run | 3 | | 10.00% (1 run) | | 1 s | CPU |"
    kept = (
        "| `seed000_two_conv` | TwoConvNet | 8,490 | SGD lr 0.01 | 10 | seed 000 | 98.50% (3 runs) | met | 85 s | CPU |"
    )
    page.write_text(f"# Results\n\n| experiment |\n|---|\n{old_quickstart}\n{kept}\n")
    code, _, err = run_main(
        "results", "--log_root", str(tmp_path / "logs"), "--out", str(page), "--update", capsys=capsys
    )
    assert code == 0, err
    rows = page_rows(page.read_text())
    assert rows["seed000_two_conv"] == kept  # no run of it under the log root: kept as it was
    assert rows["quickstart"] != old_quickstart and "(1 run)" in rows["quickstart"]  # rebuilt from the run
    assert "Kept from the page as it was, from runs no longer under" in page.read_text()
    assert "--update" in page.read_text().splitlines()[2]
    # Without --update the page holds only what the log root holds.
    assert run_main("results", "--log_root", str(tmp_path / "logs"), "--out", str(page), capsys=capsys)[0] == 0
    assert set(page_rows(page.read_text())) == {"quickstart"}
