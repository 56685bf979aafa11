"""Pretraining data and objective: WikiText parsing, NSP pairs, BERT masking, masked-only MLM loss."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bertops.pretraining.corpus import nsp_examples, read_documents, split_sentences
from bertops.pretraining.masking import mask_tokens

WIKI = """ 
 = First Article = 
 
 The first article starts here . It has a second sentence . And a third one !
 
 = = A Section = = 
 
 More text in the 2 @-@ part section . Another sentence follows .
 = Second Article = 
 
 Only this article is here . It talks about other things . Truly other things .
"""


def test_wikitext_articles_become_documents_of_sentences(tmp_path: Path):
    path = tmp_path / "wiki.raw"
    path.write_text(WIKI)
    docs = read_documents(path)
    assert len(docs) == 2  # split at top-level titles; the section heading stays inside article 1
    assert docs[0][0] == "The first article starts here ." and "More text in the 2-part section ." in docs[0]
    assert not any("=" in s for d in docs for s in d)
    assert split_sentences("Dr . Smith came . He left .") == ["Dr .", "Smith came .", "He left ."]


def _documents(n_docs: int = 30, sentences: int = 12, seed: int = 0) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    # Token ids encode their document (id // 1000) so a pair's provenance is checkable.
    return [
        [list(d * 1000 + rng.integers(0, 999, rng.integers(5, 20))) for _ in range(sentences)] for d in range(n_docs)
    ]


def test_nsp_pairs_are_half_true_continuations_and_fit_the_length():
    docs = _documents()
    examples = nsp_examples(docs, max_length=64, short_seq_prob=0.1, seed=1)
    assert len(examples) > 50
    assert all(len(e.a) + len(e.b) <= 61 and e.a and e.b for e in examples)
    share = np.mean([e.is_next for e in examples])
    assert 0.35 < share < 0.65
    for e in examples:
        same_doc = e.a[0] // 1000 == e.b[0] // 1000
        assert same_doc if e.is_next else not same_doc  # a random B always comes from another document
    assert examples == nsp_examples(docs, max_length=64, short_seq_prob=0.1, seed=1)  # reproducible


def test_nsp_needs_two_documents():
    with pytest.raises(ValueError, match="at least 2 documents"):
        nsp_examples(_documents(1), 64, 0.1, 0)


def test_masking_follows_bert_rates_and_never_touches_special_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 1000, (64, 128))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -1] = special[:, 100:110] = True
    out = mask_tokens(ids, special, rng, mask_id=4, vocab_size=1000)
    chosen = np.zeros_like(special)
    chosen[out.positions[:, 0], out.positions[:, 1]] = True
    assert not (chosen & special).any()
    assert chosen.sum() / (~special).sum() == pytest.approx(0.15, abs=0.01)
    assert (out.labels == ids[chosen]).all()
    after = out.input_ids[chosen]
    masked, unchanged = (after == 4).mean(), (after == out.labels).mean()
    assert masked == pytest.approx(0.8, abs=0.03) and unchanged == pytest.approx(0.1 + 0.1 / 1000, abs=0.03)
    assert (out.input_ids[~chosen] == ids[~chosen]).all()


def test_whole_word_masking_takes_every_piece_of_a_word():
    rng = np.random.default_rng(3)
    ids = rng.integers(10, 1000, (32, 60))
    special = np.zeros_like(ids, dtype=bool)
    word_start = np.ones_like(special)
    word_start[:, 1::3] = False  # every word = pieces at columns 3k, 3k+1
    out = mask_tokens(ids, special, rng, 4, 1000, 0.15, word_start)
    chosen = np.zeros_like(special)
    chosen[out.positions[:, 0], out.positions[:, 1]] = True
    assert (chosen[:, 0::3][:, :20] == chosen[:, 1::3][:, :20]).all()


def test_mlm_loss_runs_only_at_masked_positions():
    from bertops.pretraining.model import build_pretraining_model, pretraining_losses

    torch.manual_seed(0)
    model = build_pretraining_model("tiny", None, vocab_size=500, max_length=32)
    ids = torch.randint(5, 500, (4, 32))
    positions = torch.tensor([[0, 3], [1, 5], [3, 30]])
    labels = torch.tensor([7, 8, 9])
    calls = []
    handle = model.cls.predictions.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    out = pretraining_losses(
        model, ids, torch.ones_like(ids), torch.zeros_like(ids), positions, labels, torch.tensor([1, 0, 1, 0])
    )
    handle.remove()
    assert calls == [torch.Size([3, 500])]  # 3 masked positions, not 4 x 32 tokens
    assert out["mlm_total"] == 3 and out["nsp_total"] == 4
    assert float(out["loss"].detach()) == pytest.approx(float(out["mlm_loss"] + out["nsp_loss"]))
    out["loss"].backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None
