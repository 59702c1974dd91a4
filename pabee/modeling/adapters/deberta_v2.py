"""DeBERTa-v2 and v3 with PABEE (see pabee/modeling/model.py). The head is DebertaV2ForSequenceClassification's
shape: its ContextPooler (dense + activation on the first token), shared by every layer, then one
classifier per layer. Relative-position tables are shared by all examples; the layer-0
convolution (conv_kernel_size > 0) reads the padding mask, which leaves with exited rows."""

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.deberta_v2.modeling_deberta_v2 import (
    ContextPooler,
    DebertaV2Model,
    DebertaV2PreTrainedModel,
)

from pabee.early_exit.batch_rows import LayerInputs
from pabee.modeling.model import PabeeMixin


class DebertaV2ForSequenceClassificationWithPabee(PabeeMixin, DebertaV2PreTrainedModel):
    """`deberta.*`, `pooler` and `classifier` as in DebertaV2ForSequenceClassification (classifier
    is the last layer's head); `classifiers.{i}` are the heads of the layers below."""

    head_parameters = PabeeMixin.head_parameters + ("pooler.",)

    def __init__(self, config):
        super().__init__(config)
        self.deberta = DebertaV2Model(config)
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(self.pooler.output_dim, config.num_labels)
        dropout = getattr(config, "cls_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.init_pabee(config)
        self.post_init()

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        shape = (input_ids if input_ids is not None else inputs_embeds[..., 0]).shape
        device = (input_ids if input_ids is not None else inputs_embeds).device
        return self.deberta.embeddings(
            input_ids=input_ids,
            token_type_ids=torch.zeros(shape, dtype=torch.long, device=device) if token_type_ids is None else token_type_ids,
            position_ids=position_ids,
            mask=torch.ones(shape, device=device) if attention_mask is None else attention_mask,
            inputs_embeds=inputs_embeds,
        )

    def layer_inputs(self, hidden, attention_mask, position_ids):
        encoder = self.deberta.encoder
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return LayerInputs(
            rows={"mask": encoder.get_attention_mask(attention_mask), "padding": attention_mask},
            shared={"relative_pos": encoder.get_rel_pos(hidden), "rel_embeddings": encoder.get_rel_embedding()},
        )

    def run_layer(self, i, hidden, inputs):
        encoder = self.deberta.encoder
        out, _ = encoder.layer[i](hidden, inputs["mask"], relative_pos=inputs["relative_pos"],
                                  rel_embeddings=inputs["rel_embeddings"])
        if i == 0 and encoder.conv is not None:
            out = encoder.conv(hidden, out, inputs["padding"])
        return out

    def pool(self, summary):
        pooler = self.pooler
        return ACT2FN[pooler.config.pooler_hidden_act](pooler.dense(pooler.dropout(summary)))
