"""ALBERT with PABEE: a head after every layer, patience-based early exit (see pabee/modeling/model.py)."""

from torch import nn
from transformers.models.albert.modeling_albert import AlbertModel, AlbertPreTrainedModel

from pabee.modeling.model import PabeeMixin


class AlbertForSequenceClassificationWithPabee(PabeeMixin, AlbertPreTrainedModel):
    """`albert.*` (pooler included) and `classifier` as in AlbertForSequenceClassification (classifier
    is the last layer's head); `classifiers.{i}` are the heads of the layers below. The original
    PABEE checkpoints, whose last head is classifiers.{L-1}, load as they are (pabee/modeling/head_layout.py)."""

    def __init__(self, config):
        super().__init__(config)
        self.albert = AlbertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.init_pabee(config, nn.Linear(config.hidden_size, config.num_labels))
        self.post_init()

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        embedded = self.albert.embeddings(
            input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        return self.albert.encoder.embedding_hidden_mapping_in(embedded)

    def run_layer(self, i, hidden, inputs):
        """Layer i runs the group that AlbertTransformer gives it (all its inner layers)."""
        group = int(i / (self.config.num_hidden_layers / self.config.num_hidden_groups))
        return self.albert.encoder.albert_layer_groups[group](hidden, inputs["mask"])

    def pool(self, summary):
        return self.albert.pooler_activation(self.albert.pooler(summary))
