"""ALBERT with PABEE under the original's module name; the class lives in pabee.adapters.albert."""

from pabee.adapters.albert import AlbertForSequenceClassificationWithPabee

__all__ = ["AlbertForSequenceClassificationWithPabee"]
