"""finetune.pooling=siamese: a packed pair encoded as two separate sentences, a cosine head fit by
a linear probe, exported to ONNX like any classifier; refused for data without pairs."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from bertops.config import ConfigError, load_config
from bertops.data.batching import collate
from bertops.models.classifier import fit_pair_head
from bertops.models.modeling_bertops import SiameseBertForSequenceClassification
from tests.conftest import REPO

CLS, SEP, PAD = 1, 2, 0


def tiny(seed: int = 0) -> SiameseBertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        attn_implementation="sdpa",
    )
    return SiameseBertForSequenceClassification(config).eval()


def packed(first: list[int], second: list[int]) -> list[int]:
    return [CLS, *first, SEP, *second, SEP]


def test_each_sentence_gets_the_vector_it_gets_alone():
    model = tiny()
    pairs = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13, 14, 15]), ([20, 21, 22, 23], [24])]
    batch = collate([packed(a, b) for a, b in pairs], None, PAD, SEP)  # padded, segment ids from [SEP]
    with torch.no_grad():
        first, second = model.pair_embeddings(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        for row, (a, b) in enumerate(pairs):
            for vector, sentence in ((first[row], a), (second[row], b)):
                alone = model.bert(torch.tensor([[CLS, *sentence, SEP]])).last_hidden_state.mean(1)[0]
                assert torch.allclose(vector, alone, atol=1e-5), (row, sentence)
        # ... so the other sentence and the padding change nothing: not a cross-encoder
        swapped = collate([packed(a, [30, 31, 32, 33, 34, 35]) for a, _ in pairs], None, PAD, SEP)
        again, _ = model.pair_embeddings(swapped.input_ids, swapped.attention_mask, swapped.token_type_ids)
    assert torch.allclose(first, again, atol=1e-5)


def test_the_linear_probe_fits_the_head_to_the_frozen_cosines():
    model = tiny(1)
    generator = torch.Generator().manual_seed(0)
    sequences = [
        packed(
            torch.randint(3, 60, (4,), generator=generator).tolist(),
            torch.randint(3, 60, (3,), generator=generator).tolist(),
        )
        for _ in range(80)
    ]
    with torch.no_grad():
        batch = collate(sequences, None, PAD, SEP)
        cosines = model.similarity(batch.input_ids, batch.attention_mask, batch.token_type_ids)[:, 0]
    labels = (cosines > cosines.median()).long().tolist()  # a rule the head can only learn from the cosine
    encoder_before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    report = fit_pair_head(model, sequences, labels, PAD, SEP, "cpu", batch_size=16)
    assert report["probe_train_accuracy"] >= 0.95
    with torch.no_grad():
        predicted = model(**batch.inputs()).logits.argmax(-1)
    assert (predicted == torch.tensor(labels)).float().mean() >= 0.95
    assert all(torch.equal(v, encoder_before[k]) for k, v in model.bert.state_dict().items())  # encoder frozen
    assert not model.training


def test_a_siamese_model_exports_to_onnx_with_the_same_logits(tmp_path):
    import numpy as np

    from bertops.models.export import export_onnx, onnx_session

    class Tokenizer:  # export_onnx only needs sample inputs
        def __call__(self, texts, padding=True, return_tensors="pt"):
            batch = collate([packed([5, 6, 7], [8, 9]), packed([10, 11], [12, 13, 14, 15])], None, PAD, SEP)
            return batch.inputs()

    model = tiny(2)
    model.classifier.weight.data = torch.tensor([[2.0], [-2.0]])
    export_onnx(model, Tokenizer(), tmp_path / "model.onnx")
    batch = collate([packed([5, 9, 7, 30], [8]), packed([12], [13, 14, 15, 16, 17])], None, PAD, SEP)
    with torch.no_grad():
        expected = model(**batch.inputs()).logits.numpy()
    feeds = {k: v.numpy().astype(np.int64) for k, v in batch.inputs().items()}
    got = onnx_session(tmp_path / "model.onnx").run(["logits"], feeds)[0]
    assert np.abs(got - expected).max() < 1e-4


def test_siamese_pooling_needs_sentence_pairs():
    with pytest.raises(ConfigError, match="needs sentence pairs: set ingest.text_pair_column"):
        load_config(REPO / "params.yaml", None, ["finetune.pooling=siamese"])
    config = load_config(REPO / "params.yaml", REPO / "configs/rte.yaml", [])
    assert config.finetune.pooling == "siamese"


def test_a_siamese_teacher_distils_into_a_siamese_student():
    from bertops.training.distill import build_student

    teacher = tiny(3)
    teacher.config.architectures = ["SiameseBertForSequenceClassification"]
    student, mapping = build_student(teacher, 1, "every-other", None)
    assert isinstance(student, SiameseBertForSequenceClassification) and mapping == [1]
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(
        student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight
    )
