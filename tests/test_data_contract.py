"""Any ImageDataModule plugs in through data.class_path: classes, image shape and names reach the model and
dashboards through the declared contract, with no change elsewhere."""

import torch
from conftest import read_events, run_main


def test_a_new_dataset_trains_tests_and_logs_through_the_contract_alone(tmp_path, capsys):
    common = [
        *("--data.class_path", "conftest.ToyShapes"),
        *("--model.backbone", "lightning_cnn.models.BatchNormCNN", "--model.backbone.init_args.width", "4"),
        *("--model.backbone.init_args.in_channels", "2", "--model.backbone.init_args.num_classes", "3"),
        *("--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *("--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger"),
        *("--trainer.logger.init_args.save_dir", str(tmp_path / "logs")),
        *("--trainer.logger.init_args.name", "toy"),
    ]
    code, _, err = run_main("fit", *common, capsys=capsys)
    assert code == 0, err[-3000:]
    run = tmp_path / "logs" / "toy" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["num_classes"] == 3  # linked from the data module
    assert tuple(checkpoint["hyper_parameters"]["input_shape"]) == (2, 12, 12)
    events = read_events(run)
    assert "val/confusion_matrix" in events.Tags()["images"]

    code, out, err = run_main("test", *common, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), capsys=capsys)
    assert code == 0, err[-3000:]
    assert "test/acc" in out
