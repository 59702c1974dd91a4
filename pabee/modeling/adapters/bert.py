"""BERT with PABEE: a head after every layer, patience-based early exit (see pabee/modeling/model.py)."""

from torch import nn
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

from pabee.modeling.model import PabeeMixin


class BertForSequenceClassificationWithPabee(PabeeMixin, BertPreTrainedModel):
    """`bert.*` (pooler included) and `classifier` as in BertForSequenceClassification (classifier
    is the last layer's head); `classifiers.{i}` are the heads of the layers below. The original
    PABEE checkpoints, whose last head is classifiers.{L-1}, load as they are (pabee/modeling/head_layout.py)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.init_pabee(config, nn.Linear(config.hidden_size, config.num_labels))
        self.post_init()

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        return self.bert.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )

    def run_layer(self, i, hidden, inputs):
        return self.bert.encoder.layer[i](hidden, inputs["mask"])

    def pool(self, summary):
        return self.bert.pooler.activation(self.bert.pooler.dense(summary))
