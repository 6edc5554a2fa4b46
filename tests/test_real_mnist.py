"""The quickstart on the official MNIST files, end to end through the CLI: verified data, training, test."""

import pytest
from conftest import REPO, run_cli


@pytest.mark.slow
def test_quickstart_reaches_98_percent_on_the_official_test_set(real_data_dir, tmp_path):
    common = ["--config", str(REPO / "configs" / "quickstart.yaml"), "--data.data_dir", str(real_data_dir)]
    fit = run_cli("fit", *common, cwd=tmp_path, timeout=1200, subprocess_=True)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = run_cli("test", *common, "--ckpt_path", "best", cwd=tmp_path, subprocess_=True)
    assert test.returncode == 0, test.stderr[-3000:]
    line = next(line for line in test.stdout.splitlines() if "test/acc" in line)
    accuracy = float(line.replace("│", " ").split()[1])
    print(f"quickstart test accuracy: {accuracy:.4f}")
    assert accuracy >= 0.98
