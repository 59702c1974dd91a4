"""DistilBERT with PABEE (see pabee/modeling/model.py). The head is DistilBertForSequenceClassification's shape:
pre_classifier + ReLU on the first token, shared by every layer, then one classifier per layer."""

from torch import nn
from torch.nn import functional as F
from transformers.models.distilbert.modeling_distilbert import DistilBertModel, DistilBertPreTrainedModel

from pabee.modeling.model import PabeeMixin


class DistilBertForSequenceClassificationWithPabee(PabeeMixin, DistilBertPreTrainedModel):
    """`distilbert.*`, `pre_classifier` and `classifier` as in DistilBertForSequenceClassification
    (classifier is the last layer's head); `classifiers.{i}` are the heads of the layers below."""

    head_parameters = PabeeMixin.head_parameters + ("pre_classifier.",)

    def __init__(self, config):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)
        self.init_pabee(config)
        self.post_init()

    def embed(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        return self.distilbert.embeddings(input_ids, inputs_embeds, position_ids)

    def run_layer(self, i, hidden, inputs):
        return self.distilbert.transformer.layer[i](hidden, inputs["mask"])

    def pool(self, summary):
        return F.relu(self.pre_classifier(summary))
