"""The model summary printed at the start of fit: the network's layers, whole lines when piped, no metric objects."""

from __future__ import annotations

from conftest import config_run_args, make_synthetic_mnist, run_cli


def test_summary_piped_lists_the_layers_on_whole_lines_without_the_metrics(tmp_path):
    data_dir = make_synthetic_mnist(tmp_path / "data")
    args = config_run_args("quickstart.yaml", data_dir, tmp_path / "logs", "--trainer.max_epochs", "1")
    # In-process, stdout is a buffer rather than a terminal: what `fit ... | tee log` gets.
    result = run_cli("fit", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if "backbone." in line]
    names = [line.split("│")[1].strip() for line in rows]
    assert names[:3] == ["backbone.conv1", "backbone.pool1", "backbone.relu1"] and "backbone.fc" in names
    conv1 = rows[names.index("backbone.conv1")]
    # Name, type, parameters, mode, FLOPs, input and output sizes on one line: wider than 80 columns.
    assert "Conv2d" in conv1 and "260" in conv1 and "[2, 10, 24, 24]" in conv1 and len(conv1) > 80
    assert "Accuracy" not in result.stdout and "MeanMetric" not in result.stdout and "MaxMetric" not in result.stdout
    assert "Total params: 8.5 K" in result.stdout
