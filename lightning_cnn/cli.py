"""The command line: LightningCLI over ImageClassifier and any ImageDataModule (MNIST by default), and additions.

Additions: a best/last ModelCheckpoint configurable under ``checkpoint.*``, links that pass the
data's class count and image shape to the model, ``--ckpt_path best|last`` resolved to the newest
run of the experiment (so ``test`` and resumed ``fit`` work in a new process, in that run's
folder), the global batch size logged at the start of fit, warnings shown by rank zero only, and
user errors printed as one line instead of a traceback.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import NoReturn

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lightning_cnn.callbacks.dashboard import Dashboard
from lightning_cnn.callbacks.gc_freeze import FreezeLongLivedObjects
from lightning_cnn.callbacks.global_batch_size import GlobalBatchSizeLogger
from lightning_cnn.callbacks.last_checkpoint import LastCheckpoint
from lightning_cnn.callbacks.learning_rate import LearningRateLogger
from lightning_cnn.callbacks.model_summary import NetworkSummary
from lightning_cnn.callbacks.prediction_writer import PredictionWriter
from lightning_cnn.callbacks.progress_bar import RunProgressBar
from lightning_cnn.callbacks.run_config import RunConfigCallback
from lightning_cnn.callbacks.run_record import RunRecorder
from lightning_cnn.callbacks.throughput import Throughput
from lightning_cnn.callbacks.weight_averaging import StochasticWeightAverage, WeightAverage, averaging_callback
from lightning_cnn.checkpoints import load_checkpoint, validate_checkpoint
from lightning_cnn.data import ImageDataModule
from lightning_cnn.errors import UserError
from lightning_cnn.module import ImageClassifier
from lightning_cnn.option_errors import one_line
from lightning_cnn.runs.checkpoints import RUN_ALIASES, claim_new_run, resolve_run_checkpoint
from lightning_cnn.runs.folders import (
    remove_unfinished_run,
)

LOG_ROOT = "lightning_logs"
DEFAULT_DATA = "lightning_cnn.data.MNISTDataModule"
PROGRESS_BAR_REFRESH_PER_SECOND = 4
# Commands beside LightningCLI's fit/validate/test/predict: name -> module with a main(args).
TOOLS = {
    "report": "lightning_cnn.tools.report",  # a table and plots of finished runs
    "export": "lightning_cnn.tools.export",  # checkpoint -> ONNX and TorchScript
    "sweep": "lightning_cnn.tools.sweep",  # a grid or search on Optuna, over seeds, with workers
    "compare": "lightning_cnn.tools.compare",  # two configurations over the same seeds: the paired difference
    "results": "lightning_cnn.tools.results",  # the results page: ours vs the tutorials' figures
    "explain": "lightning_cnn.tools.explain",  # a network's layer arithmetic, as the tutorials work it out
    "lr_find": "lightning_cnn.tools.lr_find",  # Lightning's learning-rate finder on a config
    "ensemble": "lightning_cnn.tools.ensemble",  # several checkpoints' averaged softmax on the test set
}
# This CLI's own callbacks, each configured in its own section (checkpoint.monitor, insight.filters, ...).
CALLBACK_SECTIONS = {
    "checkpoint": ModelCheckpoint,  # the best checkpoint by validation accuracy
    "last_checkpoint": LastCheckpoint,  # last.ckpt at every epoch end and on SIGINT/SIGTERM
    "predictions": PredictionWriter,  # the predict CSV
    "insight": Dashboard,  # dashboard images, hparams, graph and timing
    "learning_rate": LearningRateLogger,  # the learning rate, in the training group
    "ema": WeightAverage,  # an exponential moving average of the weights (ema.decay), used for evaluation
    "swa": StochasticWeightAverage,  # or their equal-weight average from an epoch on (swa.start_epoch)
    "throughput": Throughput,  # Lightning's ThroughputMonitor: samples and FLOPs per second
}

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": LOG_ROOT, "name": "default", "default_hp_metric": False},
    },
    # Every layer of the network with its output shape and parameter count, as the tutorials compute by hand
    # (explain.md adds the formulas and receptive fields); as wide as it needs when piped, without the metrics.
    "callbacks": [NetworkSummary(max_depth=-1), GlobalBatchSizeLogger(), FreezeLongLivedObjects()],
}


class QuietUsageParser(LightningArgumentParser):
    """Lightning's parser, with errors shown as the error line and a --help tip, without the full usage.

    (The usage of a LightningCLI subcommand runs to hundreds of lines and buries the one that matters.)
    """

    # The command line being parsed, to name the option and value a rejected-value error is about.
    command_line: list[str] = []

    def print_usage(self, file: object = None) -> None:
        if file is not sys.stderr:
            super().print_usage(file)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        super().error(one_line(message, self.command_line), ex)


class CNNLightningCLI(LightningCLI):
    # The run folder that the last command of this process claimed (removed if the command fails untrained).
    last_claimed_run: Path | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # This CLI's own callbacks, each configured in its own section. They are added to the trainer by
        # instantiate_trainer, which leaves out the ones a command has no use for.
        for section, callback_class in CALLBACK_SECTIONS.items():
            parser.add_class_arguments(callback_class, section, fail_untyped=False, sub_configs=True)
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                # LastCheckpoint writes last.ckpt: ModelCheckpoint's save_last refreshes it only with a new best.
                "checkpoint.save_last": False,
                "checkpoint.filename": "best-epoch{epoch:02d}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # Any ImageDataModule; data.class_path chooses another (the MNIST options apply without it).
        parser.set_defaults({"data": {"class_path": DEFAULT_DATA}})
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_shape", "model.input_shape", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: object) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            resolve_run_checkpoint(config)
            self.claimed_run = claim_new_run(config)
            type(self).last_claimed_run = self.claimed_run
            self.save_config_kwargs = {**self.save_config_kwargs, "claimed_run": self.claimed_run is not None}
            if config.get("ckpt_path") not in (None, *RUN_ALIASES):
                # LightningCLI reads the checkpoint's hyperparameters next: a damaged file or a
                # non-checkpoint must fail here with one clear sentence, not a traceback.
                load_checkpoint(config.ckpt_path)
            if "weights_only" in config and config.weights_only is None:
                config.weights_only = True  # what torch does by default; stated so the saved config shows it
            # LightningCLI next applies the checkpoint's hyperparameters to the model, whatever the
            # subcommand. test/predict/validate want that (the network comes from the checkpoint); a
            # resumed fit trains what its config says, and a checkpoint of another network is refused.
            self.configured_model = config.model.clone() if subcommand == "fit" else None

    def before_instantiate_classes(self) -> None:
        if getattr(self, "configured_model", None) is not None:
            self.config.fit.model = self.configured_model

    def _check_inputs(self) -> None:
        # Before the trainer starts (and creates a run folder): a checkpoint that does not fit the
        # model or a predict path that names no file stops here and leaves nothing behind.
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path is not None and ckpt_path not in RUN_ALIASES:
            validate_checkpoint(ckpt_path, self.model)
        self.model.check_backbone()
        if self.subcommand == "fit":
            self.model.check_optimization()
            if not self.datamodule.has_validation and self.model.monitors_validation():
                raise UserError(
                    "model.scheduler ReduceLROnPlateau watches val/loss, but the data holds out no validation "
                    "images (data.val_split=0); set data.val_split (such as 5000) or choose another scheduler"
                )
        if self.subcommand == "predict":
            for callback in self.trainer.callbacks:
                if isinstance(callback, PredictionWriter):
                    callback.check_output()
        # Before a run folder exists: nothing is written for a request that cannot run.
        self.datamodule.check_inputs(self.subcommand)

    before_fit = before_validate = before_test = before_predict = _check_inputs

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        config = self.config_init[self.subcommand]
        trainer_config = config["trainer"]
        listed = trainer_config.get("callbacks") or []
        listed = list(listed) if isinstance(listed, list) else [listed]
        own = self._own_callbacks(config, trainer_config, listed)
        if not self.datamodule.has_validation and trainer_config.get("limit_val_batches") is None:
            # data.val_split=0: nothing is validated, and Lightning need not look for validation batches.
            kwargs.setdefault("limit_val_batches", 0)
        return super().instantiate_trainer(callbacks=[*listed, *own], **kwargs)

    def _own_callbacks(self, config: Namespace, trainer_config: dict, listed: list[Callback]) -> list[Callback]:
        """This CLI's callbacks for the current command: those it has no use for are left out."""
        callbacks: list[Callback] = []
        if trainer_config.get("enable_checkpointing") is not False:
            # The user asked for no checkpoints: this CLI's own (best and last) are left out rather than
            # let Lightning refuse the combination. Checkpoint callbacks the user lists still make it refuse.
            callbacks += [config["checkpoint"], config["last_checkpoint"]]
        if not self.datamodule.has_validation:
            # Nothing is validated, so no checkpoint can be the best by a val/ metric (last.ckpt stays).
            callbacks = [callback for callback in callbacks if not _monitors_validation(callback)]
        if self.subcommand == "predict":
            # Lightning calls every callback's hooks at every step, used or not; the CSV writer works in predict only.
            callbacks.append(config["predictions"])
        callbacks += [*config["insight"].callbacks(), config["learning_rate"], RunRecorder()]
        throughput = config["throughput"].callback()
        callbacks += [throughput] if throughput is not None else []
        if self.subcommand == "fit":
            # Only fit averages; test and predict read the average from the checkpoint's state_dict.
            averaging = averaging_callback(config["ema"], config["swa"], trainer_config.get("max_epochs"))
            callbacks += [averaging] if averaging is not None else []
        # Lightning's default (Rich) bar redraws up to 100 times a second from a second thread, a tenth
        # of a small network's training time on a CPU; the same bar redrawn a few times a second costs
        # nothing measurable (benchmarks/throughput.py). A bar the user configures is left alone.
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(callback, ProgressBar) for callback in listed
        ):
            callbacks.append(RunProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_PER_SECOND))
        return callbacks


def config_tool(cli_class: type[CNNLightningCLI], prog: str, description: str, args: list[str]) -> CNNLightningCLI:
    """A tool that reads a run's config as ``fit`` does (the same options, links and checks) and then does its own
    work instead of training: the classes are built, nothing runs."""
    return cli_class(
        ImageClassifier,
        ImageDataModule,
        subclass_mode_data=True,
        run=False,
        parser_class=QuietUsageParser,  # a parse error is its one line, not the whole usage
        save_config_callback=None,
        trainer_defaults=TRAINER_DEFAULTS,
        parser_kwargs={"prog": prog, "description": description},
        args=args,
    )


def _monitors_validation(callback: Callback) -> bool:
    return isinstance(callback, ModelCheckpoint) and str(callback.monitor or "").startswith("val/")


def _exit_stopped(signum: signal.Signals) -> None:
    print(f"stopped by {signum.name}", file=sys.stderr)
    sys.exit(128 + signum)


def _remove_claimed_run() -> None:
    if CNNLightningCLI.last_claimed_run is not None:
        remove_unfinished_run(CNNLightningCLI.last_claimed_run)


def main(args: list[str] | None = None) -> None:
    if rank_zero_only.rank > 0:
        # Every process of a distributed run executes the same code: its warnings repeat rank zero's.
        warnings.simplefilter("ignore")
    # Lightning's pytree helper uses a torch class that newer torch deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    # Lightning advertises a cloud logging service on every run; this tool logs to TensorBoard.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )
    # LightningCLI reads sys.argv itself when args is None (and warns when given both): keep args as given.
    argv = sys.argv[1:] if args is None else args
    CNNLightningCLI.last_claimed_run, LastCheckpoint.stopped_by = None, None
    QuietUsageParser.command_line = list(argv)
    sigint_handler = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        if argv and argv[0] in TOOLS:
            # Not Lightning stages: each tool has its own small parser (see '<tool> --help').
            importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
            return
        cli = CNNLightningCLI(
            ImageClassifier,
            ImageDataModule,
            subclass_mode_data=True,
            parser_class=QuietUsageParser,
            save_config_callback=RunConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            parser_kwargs={
                "prog": "python -m lightning_cnn",
                "description": "Train, evaluate and use CNNs on MNIST. "
                "Also: 'report' (a table and plots of the runs under a log root), 'export' (checkpoint to ONNX "
                "and TorchScript), 'sweep' (a grid or a search on Optuna), 'compare' (two configurations over "
                "the same seeds), 'results' (the results page), 'lr_find' (the learning-rate finder), "
                "'ensemble' (checkpoints averaged), "
                "'explain' (a network's output sizes, parameters, receptive fields and FLOPs, layer by layer); "
                "see '<command> --help'.",
            },
            args=args,
        )
    except UserError as error:
        _remove_claimed_run()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except MisconfigurationException as error:
        _remove_claimed_run()
        # Lightning's word for trainer settings that cannot work together or on this machine; its
        # message names them. A traceback would add nothing but noise.
        print(f"error: {error} (fix the trainer.* settings named; see --help)", file=sys.stderr)
        sys.exit(1)
    except SystemExit:
        if LastCheckpoint.stopped_by is not None:
            # Lightning exits with 1 after a KeyboardInterrupt (a second Ctrl+C); LastCheckpoint saved.
            _exit_stopped(LastCheckpoint.stopped_by)
        _remove_claimed_run()  # the parser's own errors exit here; a claimed folder must not stay behind
        raise
    except (SIGTERMException, KeyboardInterrupt):
        # fit saved last.ckpt already (LastCheckpoint); the exit status tells which signal stopped it.
        _exit_stopped(LastCheckpoint.stopped_by or signal.SIGINT)
    finally:
        # A stopped fit ends in an exception, where Lightning calls no teardown: give Ctrl+C back to the
        # caller; but when the caller is Python's default, one more Ctrl+C while the process exits would
        # only turn the exit status of the saved stop into a KeyboardInterrupt.
        if sigint_handler is not None:
            stopped = LastCheckpoint.stopped_by is not None and sigint_handler is signal.default_int_handler
            signal.signal(signal.SIGINT, signal.SIG_IGN if stopped else sigint_handler)
    failures = cli.datamodule.predict_failures
    if cli.subcommand == "predict" and failures:
        print(f"error: {len(failures)} files could not be read and were skipped (listed above)", file=sys.stderr)
        sys.exit(1)
