"""A BERT sequence classifier over the mean of the token states (sentence-transformers pooling).

Self-contained on purpose (torch + transformers only): `save_pretrained` copies this file into
every saved model folder (`auto_map` in its config.json), so the model loads anywhere with
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`, bertops
installed or not (the Bento, for instance).

Why mean pooling: encoders such as all-MiniLM-L6-v2 were trained so that the mean of their
token states is the sentence representation; their [CLS] + pooler path was never trained for
it. On SST-2 the mean-pooled head fine-tunes to a better model (see README figures).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPoolingBertForSequenceClassification(BertPreTrainedModel):
    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)  # the pooler would be dead weight
        self.dropout = nn.Dropout(config.classifier_dropout if config.classifier_dropout is not None
                                  else config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        encoded = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            output_hidden_states=output_hidden_states, return_dict=True)
        hidden = encoded.last_hidden_state                                         # (B, T, H)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device, dtype=torch.long)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                       # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)        # (B, H)
        logits = self.classifier(self.dropout(pooled))                             # (B, num_labels)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)


MeanPoolingBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
