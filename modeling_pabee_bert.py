"""BERT with PABEE under the original's module name; the class lives in pabee.modeling.adapters.bert."""

from pabee.modeling.adapters.bert import BertForSequenceClassificationWithPabee

__all__ = ["BertForSequenceClassificationWithPabee"]
