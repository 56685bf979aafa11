"""BERT sequence classifiers over mean-pooled token states (sentence-transformers pooling).

- MeanPoolingBertForSequenceClassification: one text (or a packed pair), the mean of its token
  states -> a linear head.
- SiameseBertForSequenceClassification: a sentence pair packed as usual ([CLS] a [SEP] b [SEP],
  segment ids 0/1) but encoded as two *separate* sentences ([CLS] a [SEP] and [CLS] b [SEP]), so
  each gets exactly the vector a bi-encoder gives it alone; the head reads their cosine similarity.

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


def _num_labels(config: BertConfig) -> int:
    """`config.num_labels`, typed optional by transformers but always set: PreTrainedConfig.__post_init__
    fills `id2label` (2 labels by default), and the count is read from it."""
    num_labels = config.num_labels
    assert num_labels is not None
    return num_labels


class MeanPoolingBertForSequenceClassification(BertPreTrainedModel):
    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = _num_labels(config)
        self.bert = BertModel(config, add_pooling_layer=False)  # the pooler would be dead weight
        self.dropout = nn.Dropout(
            config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        )
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
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
        encoded = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = encoded.last_hidden_state  # (B, T, H)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device, dtype=torch.long)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, H)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)


class SiameseBertForSequenceClassification(BertPreTrainedModel):
    """Sentence pairs through a bi-encoder: logits = Linear(cos(mean(a), mean(b))).

    Why: encoders trained as bi-encoders (all-MiniLM-L6-v2 saw NLI pairs as *separate* sentences
    under a cosine objective) carry their pair knowledge in that cosine; packing both sentences
    into one cross-attended input throws it away, and 2.5k RTE pairs cannot teach it again
    (README figures). Packed inputs are kept so that prepare, batching, export and the endpoint
    treat it like any pair classifier; a row without a second segment has a zero second vector.
    """

    config_class = BertConfig

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = _num_labels(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(1, self.num_labels)  # per label: weight * cosine + bias
        self.post_init()

    def pair_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(first sentence vectors, second sentence vectors), each the mean of its own token states.

        One encoder call over two views of the packed rows: the first sees [CLS] a [SEP]; the second
        sees the same [CLS] then b [SEP] at positions 1.. (exactly `[CLS] b [SEP]` encoded alone:
        [CLS] is the attention sink these encoders were trained with, so it must stay).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        real = attention_mask.bool()
        segment = (token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)) * attention_mask
        index = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, T)
        first = real & (segment == 0)
        second = (real & (segment == 1)) | (index == 0)
        first_length = first.sum(dim=1, keepdim=True)
        second_positions = torch.where(segment == 1, index - first_length + 1, torch.zeros_like(index))
        hidden = self.bert(
            torch.cat([input_ids, input_ids]),
            attention_mask=torch.cat([first, second]).long(),
            token_type_ids=torch.zeros_like(torch.cat([input_ids, input_ids])),
            position_ids=torch.cat([index.expand_as(input_ids), second_positions]),
            return_dict=True,
        ).last_hidden_state
        rows = input_ids.shape[0]
        vectors = []
        for states, mask in ((hidden[:rows], first), (hidden[rows:], second)):
            weights = mask.unsqueeze(-1).to(states.dtype)
            vectors.append((states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0))
        return vectors[0], vectors[1]

    def similarity(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """(B, 1) cosine similarity of the pair's two sentence vectors: what the head reads."""
        first, second = self.pair_embeddings(input_ids, attention_mask, token_type_ids)
        return nn.functional.cosine_similarity(first, second, dim=-1, eps=1e-6).unsqueeze(-1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        logits = self.classifier(self.similarity(input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


MeanPoolingBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
SiameseBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
