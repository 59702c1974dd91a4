"""ELECTRA with PABEE (see pabee/modeling/model.py). The head is ElectraClassificationHead's shape: dense + GELU on
the first token, shared by every layer, then one out_proj per layer."""

from transformers.models.electra.modeling_electra import (
    ElectraClassificationHead,
    ElectraModel,
    ElectraPreTrainedModel,
)

from pabee.modeling.model import PabeeMixin, SharedDenseHead


class ElectraForSequenceClassificationWithPabee(SharedDenseHead, PabeeMixin, ElectraPreTrainedModel):
    """`electra.*` and `classifier.{dense,out_proj}` as in ElectraForSequenceClassification (out_proj
    is the last layer's head); `classifiers.{i}` are the heads of the layers below."""


    def __init__(self, config):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.init_classifier(config, ElectraClassificationHead(config))
        self.post_init()

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        embedded = self.electra.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        if hasattr(self.electra, "embeddings_project"):  # embedding_size != hidden_size
            embedded = self.electra.embeddings_project(embedded)
        return embedded

    def run_layer(self, i, hidden, inputs):
        return self.electra.encoder.layer[i](hidden, inputs["mask"])

    def pool(self, summary):
        return self.classifier.activation(self.classifier.dense(self.classifier.dropout(summary)))
