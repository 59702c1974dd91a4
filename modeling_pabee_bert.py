"""BERT with PABEE under the original's module name; the class lives in pabee.adapters.bert."""

from pabee.adapters.bert import BertForSequenceClassificationWithPabee

__all__ = ["BertForSequenceClassificationWithPabee"]
