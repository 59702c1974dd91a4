"""RoBERTa with PABEE (see pabee/modeling/model.py). The head is RobertaClassificationHead's shape: dense + tanh on
`<s>`, shared by every layer, then one out_proj per layer."""

import torch
from transformers.models.roberta.modeling_roberta import (
    RobertaClassificationHead,
    RobertaModel,
    RobertaPreTrainedModel,
)

from pabee.modeling.model import PabeeMixin, SharedDenseHead


class RobertaForSequenceClassificationWithPabee(SharedDenseHead, PabeeMixin, RobertaPreTrainedModel):
    """`roberta.*` and `classifier.{dense,out_proj}` as in RobertaForSequenceClassification (out_proj
    is the last layer's head); `classifiers.{i}` are the heads of the layers below."""

    _keys_to_ignore_on_load_unexpected = [r"pooler\.dense\."]  # RobertaModel's pooler, unused here as there

    def __init__(self, config):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.init_classifier(config, RobertaClassificationHead(config))
        self.post_init()

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        return self.roberta.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )

    def run_layer(self, i, hidden, inputs):
        return self.roberta.encoder.layer[i](hidden, inputs["mask"])

    def pool(self, summary):
        return torch.tanh(self.classifier.dense(self.classifier.dropout(summary)))
