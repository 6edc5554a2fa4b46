"""The ``insight.*`` settings: which dashboard callbacks a run gets, and the time budget they share."""

from __future__ import annotations

from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from lightning.pytorch.callbacks import Callback

from lightning_cnn.callbacks.class_visualization import ClassVisualization
from lightning_cnn.callbacks.confusion_matrix import ConfusionMatrix
from lightning_cnn.callbacks.embeddings import Embeddings
from lightning_cnn.callbacks.explain_table import ExplainTable
from lightning_cnn.callbacks.feature_maps import FeatureMaps
from lightning_cnn.callbacks.group import CallbackGroup
from lightning_cnn.callbacks.image_budget import ImageBudget
from lightning_cnn.callbacks.input_grid import InputGrid
from lightning_cnn.callbacks.misclassified import Misclassified
from lightning_cnn.callbacks.per_class_accuracy import PerClassAccuracy
from lightning_cnn.callbacks.reliability import ReliabilityDiagram
from lightning_cnn.callbacks.run_info import RunInfo
from lightning_cnn.callbacks.tensorboard import DashboardCallback


class Dashboard:
    """What a run shows in TensorBoard beyond its loss and accuracy curves, one callback per kind.

    Images, one tag per kind and one image per drawn epoch: ``train/inputs`` (:class:`InputGrid`),
    ``val/misclassified`` (:class:`Misclassified`), ``val/confusion_matrix`` (:class:`ConfusionMatrix`),
    ``filters/<first conv>``, ``feature_maps/input`` and ``feature_maps/<conv>`` (:class:`FeatureMaps`);
    ``val/accuracy_by_class`` with the scalars ``val/acc_class/<class name>`` (:class:`PerClassAccuracy`);
    ``test`` logs ``test/misclassified``, ``test/confusion_matrix`` and ``test/accuracy_by_class`` once.
    ``val/reliability`` (at the end of fit) and ``test/reliability``: :class:`ReliabilityDiagram`.
    At the end of fit: ``class_visualization`` (:class:`ClassVisualization`, also
    ``class_visualization.png`` in the run folder) and the projector's ``penultimate_features``
    (:class:`Embeddings`). At its start, ``explain.md`` in the run folder (:class:`ExplainTable`).
    :class:`RunInfo` fills the hparams tab and logs the graph; :class:`ImageBudget` logs
    ``time/train_seconds``, ``time/insight_seconds`` and ``time/insight_skipped_epochs``.

    Args:
        input_grid: log a grid of training inputs.
        misclassified: log misclassified validation/test examples.
        confusion_matrix: log the validation/test confusion matrix.
        filters: log the first convolution's filters.
        feature_maps: log every convolution's feature maps for one fixed validation image.
        graph: log the model graph (traced on the module's ``example_input_array``).
        hparams: fill the hparams tab with the run's recipe and its final metrics.
        every_n_epochs: log images at the end of every n-th epoch.
        time_budget: most fraction of the training time the images may take; an epoch whose turn
            comes while they have cost more so far is skipped (the first is always drawn, so 0
            draws only the first). 1 turns the limit off.
        num_inputs: how many training inputs the grid shows.
        num_misclassified: at most this many misclassified examples per figure.
        saliency: overlay the misclassified examples with the pixels behind each prediction (integrated gradients).
        per_class_accuracy: log each class's validation/test accuracy and a bar chart of them.
        class_visualization: log one image per class that the network scores highest, at the end of fit.
        class_visualization_steps: gradient-ascent steps for it at most (fewer when the budget runs out).
        embeddings: log the penultimate-layer features of validation images for the projector, at the end of fit.
        num_embeddings: how many validation images the projector shows.
        explain: write the network's layer table (sizes, parameters, receptive fields) as explain.md at fit start.
        reliability: log the reliability diagram (accuracy against confidence) at the end of fit and at test.
    """

    def __init__(
        self,
        input_grid: bool = True,
        misclassified: bool = True,
        confusion_matrix: bool = True,
        filters: bool = True,
        feature_maps: bool = True,
        graph: bool = True,
        hparams: bool = True,
        every_n_epochs: PositiveInt = 1,
        time_budget: ClosedUnitInterval = 0.03,
        num_inputs: PositiveInt = 32,
        num_misclassified: PositiveInt = 16,
        saliency: bool = True,
        per_class_accuracy: bool = True,
        class_visualization: bool = True,
        class_visualization_steps: PositiveInt = 128,
        embeddings: bool = True,
        num_embeddings: PositiveInt = 256,
        explain: bool = True,
        reliability: bool = True,
    ) -> None:
        self.input_grid, self.misclassified, self.confusion_matrix = input_grid, misclassified, confusion_matrix
        self.filters, self.feature_maps, self.graph, self.hparams = filters, feature_maps, graph, hparams
        self.every_n_epochs, self.time_budget = every_n_epochs, time_budget
        self.num_inputs, self.num_misclassified = num_inputs, num_misclassified
        self.saliency, self.per_class_accuracy = saliency, per_class_accuracy
        self.class_visualization, self.class_visualization_steps = class_visualization, class_visualization_steps
        self.embeddings, self.num_embeddings, self.explain = embeddings, num_embeddings, explain
        self.reliability = reliability

    def callbacks(self) -> list[Callback]:
        """The callbacks these settings switch on, the budget before the per-epoch images (it decides each
        epoch before they draw) and after the end-of-fit ones (it logs their time at the end of training).

        A kind that is off has no callback, so it costs nothing per step; the others run as one group.
        """
        images: list[DashboardCallback] = []
        if self.input_grid:
            images.append(InputGrid(self.num_inputs))
        if self.misclassified:
            images.append(Misclassified(self.num_misclassified, self.saliency))
        if self.confusion_matrix:
            images.append(ConfusionMatrix())
        if self.per_class_accuracy:
            images.append(PerClassAccuracy())
        if self.filters or self.feature_maps:
            images.append(FeatureMaps(self.filters, self.feature_maps))
        at_fit_end: list[DashboardCallback] = []
        if self.reliability:
            at_fit_end.append(ReliabilityDiagram())
        if self.embeddings:
            at_fit_end.append(Embeddings(self.num_embeddings))
        if self.class_visualization:  # last: it takes what is left of the budget
            at_fit_end.append(ClassVisualization(self.class_visualization_steps))
        budget = ImageBudget(self.every_n_epochs, self.time_budget)
        for callback in [*images, *at_fit_end]:
            callback.budget = budget
        run_info = [RunInfo(self.hparams, self.graph)] if self.hparams or self.graph else []
        explain = [ExplainTable()] if self.explain else []
        # One callback for Lightning to call (see callbacks/group.py); the members keep their order.
        return [CallbackGroup([*explain, *at_fit_end, budget, *run_info, *images])]
