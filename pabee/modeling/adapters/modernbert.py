"""ModernBERT with PABEE (see pabee/modeling/model.py). The head is ModernBertForSequenceClassification's shape:
its prediction head (dense, activation, norm) on the first token or the token mean, as the
config's classifier_pooling says, shared by every layer, then one classifier per layer. Every
layer's states pass the final norm before a head reads them, as the last layer's do in the
model. Layers alternate global and sliding-window attention, each kind with its own mask and
rotary table; both are per example and leave with exited rows."""

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask
from transformers.models.modernbert.modeling_modernbert import (
    ModernBertModel,
    ModernBertPredictionHead,
    ModernBertPreTrainedModel,
)

from pabee.early_exit.batch_rows import LayerInputs
from pabee.modeling.model import PabeeMixin


class ModernBertForSequenceClassificationWithPabee(PabeeMixin, ModernBertPreTrainedModel):
    """`model.*`, `head` and `classifier` as in ModernBertForSequenceClassification (classifier is
    the last layer's head); `classifiers.{i}` are the heads of the layers below."""

    head_parameters = PabeeMixin.head_parameters + ("head.",)

    def __init__(self, config):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_pabee(config)
        self.post_init()

    @staticmethod
    def default_exit_pooling(config):
        return "mean" if config.classifier_pooling == "mean" else "first"

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        return self.model.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds)

    def layer_inputs(self, hidden, attention_mask, position_ids):
        batch, length = hidden.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(length, device=hidden.device).unsqueeze(0)
        position_ids = position_ids.expand(batch, length)  # a rotary table per row, so rows can leave
        masks = {"config": self.config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        rows = {"full_attention": create_bidirectional_mask(**masks, allow_is_bidirectional_skip=False),
                "sliding_attention": create_bidirectional_sliding_window_mask(**masks, allow_is_bidirectional_skip=False)}
        for kind in set(self.config.layer_types):
            rows["rotary_" + kind] = self.model.rotary_emb(hidden, position_ids, kind)
        return LayerInputs(rows)

    def run_layer(self, i, hidden, inputs):
        layer = self.model.layers[i]
        return layer(hidden, attention_mask=inputs[layer.attention_type],
                     position_embeddings=inputs["rotary_" + layer.attention_type])

    def head_states(self, hidden):
        return self.model.final_norm(hidden)

    def pool(self, summary):
        return self.head(summary)
