"""The "Segment nuclei" dock widget: pick an image layer and a model, press Run, get a labels layer
and a points layer of the detections with their scores.

Loading the model and predicting run in a worker thread (napari's ``create_worker``), so the
viewer stays responsive; tiles report progress as they finish. Every failure (no model, a
config/weights mismatch, an image that is not 2-D) ends in the viewer as an error notification
and a one-line status, never in a crash (napari 0.9's workers do not relay their errors to the
viewer themselves, so the widget does). The loaded model is kept until its settings change.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox, create_widget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager, show_error
from superqt.utils import ensure_main_thread

from ..predict import NucleiPredictor, Prediction, SetupError
from ..predict.predictor import DEFAULT_SCORE_THRESHOLD, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE

if TYPE_CHECKING:
    import napari

SHIPPED_MODEL = "nuclei"  # NucleiPredictor.from_pretrained's name of the model shipped with the package
SHIPPED = f"shipped: {SHIPPED_MODEL}"
OWN_MODEL = "config.yaml + weights"
RESULT_TAG = "sharp_fpn"  # metadata key of the layers this widget made (and may replace)


@dataclass(frozen=True)
class ModelChoice:
    """The model the widget's fields describe: a shipped model by name, or a config and weights
    file (config None: the ``config.yaml`` beside the weights, as training leaves it)."""

    shipped: Optional[str]
    config: Optional[Path]
    weights: Optional[Path]
    score_threshold: float

    def load(self) -> NucleiPredictor:
        if self.shipped:
            return NucleiPredictor.from_pretrained(self.shipped, score_threshold=self.score_threshold)
        if self.weights is None:
            raise SetupError(f"choose a weights file (.pth) for '{OWN_MODEL}', or a shipped model")
        config = self.config or self.weights.parent / "config.yaml"
        return NucleiPredictor(config, self.weights, score_threshold=self.score_threshold)


def image_plane(data, multiscale: bool, rgb: bool) -> np.ndarray:
    """The 2-D image (grey, or RGB/RGBA when ``rgb``) of a napari image layer's data; the full
    resolution level of a multiscale image."""
    array = np.asarray(data[0] if multiscale else data)
    if array.ndim - (1 if rgb else 0) != 2:
        raise ValueError(f"nuclei are predicted on one 2-D image; this layer has shape {array.shape}")
    return array


class NucleiWidget(Container):
    """Dock widget: image layer, model, score threshold, tile size, Run."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        self._viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="image")
        self.model = ComboBox(label="model", choices=[SHIPPED, OWN_MODEL], value=SHIPPED)
        self.config = FileEdit(label="config", mode="r", filter="*.yaml", nullable=True,
                               tooltip="the model's config.yaml; empty: the config.yaml beside the weights")
        self.weights = FileEdit(label="weights", mode="r", filter="*.pth *.pkl", nullable=True)
        self.score_threshold = FloatSpinBox(label="score threshold", value=DEFAULT_SCORE_THRESHOLD, min=0.0, max=1.0,
                                            step=0.05, tooltip="detections scoring less are dropped")
        self.tile_size = SpinBox(label="tile size", value=DEFAULT_TILE_SIZE, min=2 * DEFAULT_TILE_OVERLAP, max=8192,
                                 step=128, tooltip="larger images are predicted in overlapping tiles of this size")
        self.run_button = PushButton(text="Run")
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1, visible=False)
        self.status = Label(label="status", value="")
        super().__init__(widgets=[self.image, self.model, self.config, self.weights, self.score_threshold,
                                  self.tile_size, self.run_button, self.progress, self.status])
        self.model.changed.connect(self._show_model_fields)
        self.run_button.changed.connect(self.run)
        self._show_model_fields()
        self._predictor: Optional[NucleiPredictor] = None
        self._loaded: Optional[ModelChoice] = None
        self.worker = None  # the running (or last) prediction, for tests and scripts to wait on

    # -- settings ---------------------------------------------------------------------------

    def _show_model_fields(self, *_) -> None:
        self.config.visible = self.weights.visible = self.model.value == OWN_MODEL

    def model_choice(self) -> ModelChoice:
        if self.model.value == OWN_MODEL:
            return ModelChoice(None, self.config.value, self.weights.value, round(self.score_threshold.value, 4))
        return ModelChoice(SHIPPED_MODEL, None, None, round(self.score_threshold.value, 4))

    # -- running ----------------------------------------------------------------------------

    def run(self, *_) -> None:
        """Predict the chosen image layer in a worker thread; results arrive in :meth:`_show`."""
        layer = self.image.value
        if layer is None:
            message = "no image layer: open an image first (File > Open)"
            self.status.value = f"error: {message}"
            show_error(message)
            return
        self.run_button.enabled = False
        self.progress.visible = True
        self.progress.max, self.progress.value = 0, 0  # busy until the tiles are known
        self.status.value = "starting"
        self.worker = create_worker(self._predict, self.model_choice(), layer.data, layer.multiscale, layer.rgb,
                                    self.tile_size.value, _ignore_errors=True)
        self.worker.returned.connect(lambda prediction: self._show(prediction, layer))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finish)
        self.worker.start()

    def _predict(self, choice: ModelChoice, data, multiscale: bool, rgb: bool, tile_size: int) -> Prediction:
        """Worker thread: (re)load the model if its settings changed, then predict."""
        if choice != self._loaded:
            self._report("loading the model")
            self._predictor, self._loaded = None, None  # a failed load leaves no stale model behind
            self._predictor, self._loaded = choice.load(), choice
        image = image_plane(data, multiscale, rgb)
        self._predictor.tile_size = tile_size
        self._report(f"predicting a {image.shape[1]}x{image.shape[0]} image")
        return self._predictor.predict(image, progress=self._count_tiles)

    def _count_tiles(self, tiles):
        tiles = list(tiles)
        for done, tile in enumerate(tiles):
            self._report(f"tile {done + 1} of {len(tiles)}", done, len(tiles))
            yield tile
        self._report("painting the labels", len(tiles), len(tiles))

    @ensure_main_thread
    def _report(self, text: str, done: int = 0, total: int = 0) -> None:
        self.status.value = text
        self.progress.max, self.progress.value = total, done

    def _show(self, prediction: Prediction, layer: Image) -> None:
        """Main thread: put the labels and the detections (centroid, label, score, area) into the
        viewer, replacing the layers an earlier run made for the same image."""
        table = prediction.table
        centroids = np.array([[row["centroid_y"], row["centroid_x"]] for row in table]).reshape(-1, 2)
        features = {key: np.array([row[key] for row in table]) for key in ("label", "score", "area")}
        placement = {"scale": layer.scale, "translate": layer.translate, "metadata": {RESULT_TAG: layer.name}}
        self._put("labels", f"{layer.name}_labels", prediction.labels, **placement)
        self._put("points", f"{layer.name}_detections", centroids, features=features, size=4, face_color="yellow",
                  text={"string": "{score:.2f}", "size": 8, "color": "yellow", "anchor": "upper_left"}, **placement)
        threshold = self._loaded.score_threshold if self._loaded else self.score_threshold.value
        found = f"{prediction.num_objects} nuclei" if prediction.num_objects else "no nuclei"
        tiles = f" in {prediction.num_tiles} tiles" if prediction.num_tiles > 1 else ""
        self.status.value = f"{found} at score >= {threshold:g}{tiles}"

    def _put(self, kind: str, name: str, data, **kwargs) -> None:
        """Add a layer; one that an earlier run made for the same image under this name is
        replaced (a layer of the user's with the name stays, napari numbers the new one)."""
        old = self._viewer.layers[name] if name in self._viewer.layers else None
        if old is not None and old.metadata.get(RESULT_TAG) == kwargs["metadata"][RESULT_TAG]:
            self._viewer.layers.remove(old)
        getattr(self._viewer, f"add_{kind}")(data, name=name, **kwargs)

    def _failed(self, error: Exception) -> None:
        """Main thread: the error as a one-line status and a napari notification; an unexpected
        one (a bug, not bad input) keeps its traceback one click away in the notification."""
        text = " ".join(str(error).split()) or type(error).__name__
        expected = isinstance(error, (SetupError, OSError, ValueError))
        self.status.value = f"error: {text}" if expected else f"error: {type(error).__name__}: {text}"
        if expected:
            show_error(text)
        else:
            notification_manager.receive_error(type(error), error, error.__traceback__)

    def _finish(self) -> None:
        self.run_button.enabled = True
        self.progress.visible = False
