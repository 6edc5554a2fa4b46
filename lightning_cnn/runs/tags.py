"""TensorBoard tag names that more than one part of the package writes or reads."""

# Scalars shown beside the hyperparameters in the hparams tab (their last logged value per run).
HPARAM_METRICS = (
    "val/acc_best",
    "val/acc",
    "val/loss",
    "train/loss",
    "test/acc",
    "test/loss",
    "time/train_seconds",
)
TRAIN_SECONDS_TAG = "time/train_seconds"
INSIGHT_SECONDS_TAG = "time/insight_seconds"
INSIGHT_SKIPPED_TAG = "time/insight_skipped_epochs"
BEST_TAG = "val/acc_best"
# The per-epoch metrics a run record keeps as curves (report plots the first four).
CURVE_TAGS = ("train/loss", "val/loss", "train/acc", "val/acc")
RECORDED_CURVES = (*CURVE_TAGS, BEST_TAG)
