"""ALBERT with PABEE under the original's module name; the class lives in pabee.modeling.adapters.albert."""

from pabee.modeling.adapters.albert import AlbertForSequenceClassificationWithPabee

__all__ = ["AlbertForSequenceClassificationWithPabee"]
