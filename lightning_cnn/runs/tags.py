"""TensorBoard tag names that more than one part of the package writes or reads."""

# Scalars shown beside the hyperparameters in the hparams tab (their last logged value per run).
HPARAM_METRICS = (
    "val/acc_best",
    "val/acc",
    "val/loss",
    "train/loss",
    "test/acc",
    "test/loss",
    "val/ece",
    "test/ece",
    "time/train_seconds",
)
TRAIN_SECONDS_TAG = "time/train_seconds"
INSIGHT_SECONDS_TAG = "time/insight_seconds"
INSIGHT_SKIPPED_TAG = "time/insight_skipped_epochs"
BEST_TAG = "val/acc_best"
# The per-epoch metrics a run record keeps as curves (report plots the first four).
CURVE_TAGS = ("train/loss", "val/loss", "train/acc", "val/acc")
RECORDED_CURVES = (*CURVE_TAGS, BEST_TAG)
# Per-class accuracy: scalars <split>/acc_class/<class name>, and the bar chart image <split>/accuracy_by_class.
PER_CLASS_ACCURACY_PREFIX = "acc_class"
PER_CLASS_ACCURACY_IMAGE = "accuracy_by_class"
# Written once at the end of fit: the class visualization grid (also class_visualization.png in the run
# folder, for the report) and the projector's embedding of validation images.
CLASS_VISUALIZATION_TAG = "class_visualization"
CLASS_VISUALIZATION_FILENAME = "class_visualization.png"
EMBEDDING_TAG = "penultimate_features"
FLOPS_TAG = "perf/flops_per_image"  # FLOPs of one training step's forward and backward pass, per image
RELIABILITY_IMAGE = "reliability"  # val/reliability (end of fit), test/reliability: the reliability diagrams
