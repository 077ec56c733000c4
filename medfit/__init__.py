"""medfit: fine-tune pretrained image classifiers on folders of medical images, past the plateau."""

from medfit.api import Classifier, Predictions, load, resume, train
from medfit.errors import MedfitError

__all__ = ["Classifier", "MedfitError", "Predictions", "load", "resume", "train"]
__version__ = "0.1.0"
