"""The resolved config of each command, saved in its run folder."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.trainer.states import TrainerFn


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config in the run folder: ``config.yaml`` for fit, ``config_<stage>.yaml`` otherwise.

    The run folder's number that the CLI claimed for a new run is left out of the saved config, so
    that running it again starts a new run instead of writing into this one.
    """

    def __init__(self, *args: object, claimed_run: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if claimed_run:
            self.config = self.config.clone()
            self.config.trainer.logger.init_args.version = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = TrainerFn(stage).value
        self.config_filename = "config.yaml" if stage == "fit" else f"config_{stage}.yaml"
        super().setup(trainer, pl_module, stage)
