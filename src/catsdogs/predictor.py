"""Public import path `from catsdogs.predictor import Predictor`, re-exported from `catsdogs.inference.predictor`."""

from catsdogs.inference.predictor import (
    BACKENDS,
    Backend,
    ModelLoadError,
    Prediction,
    PredictionError,
    PredictionResult,
    Predictor,
)

__all__ = ["BACKENDS", "Backend", "ModelLoadError", "Prediction", "PredictionError", "PredictionResult", "Predictor"]
