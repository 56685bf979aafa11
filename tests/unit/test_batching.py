import numpy as np
import torch

from bertops.data.batching import bucketed_batches, collate, shard


def test_every_index_appears_exactly_once():
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    batches = bucketed_batches(lengths, batch_size=32, bucket_size=10, seed=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))


def _padding(lengths, batches):
    fed = sum(len(b) * lengths[b].max() for b in batches)
    return 1 - lengths.sum() / fed


def test_bucketing_wastes_far_less_padding_than_random_batches():
    lengths = np.random.default_rng(0).integers(3, 60, size=5000)
    bucketed = bucketed_batches(lengths, 32, 50, seed=3)
    order = np.random.default_rng(3).permutation(5000)
    random_batches = [order[i : i + 32] for i in range(0, 5000, 32)]
    assert _padding(lengths, bucketed) < 0.05 < 0.3 < _padding(lengths, random_batches)


def test_order_changes_with_the_seed_but_is_reproducible():
    lengths = np.arange(200) % 17
    a = bucketed_batches(lengths, 8, 4, seed=1)
    assert [x.tolist() for x in a] == [x.tolist() for x in bucketed_batches(lengths, 8, 4, seed=1)]
    assert [x.tolist() for x in a] != [x.tolist() for x in bucketed_batches(lengths, 8, 4, seed=2)]


def test_unshuffled_batches_are_length_sorted():
    lengths = np.array([5, 1, 3, 2])
    batches = bucketed_batches(lengths, 2, 1, seed=0, shuffle=False)
    assert [b.tolist() for b in batches] == [[1, 3], [2, 0]]


def test_collate_pads_to_the_longest_in_batch():
    batch = collate([[101, 7, 102], [101, 102]], [1, 0], pad_id=0)
    assert batch.input_ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.labels.dtype == torch.long and batch.real_tokens == 5


def test_shard_gives_each_rank_an_equal_disjoint_share():
    batches = [np.array([i]) for i in range(10)]
    parts = [shard(batches, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    assert len({int(b[0]) for p in parts for b in p}) == 9


def test_segment_ids_follow_the_first_sep():
    from bertops.data.batching import collate

    cls, sep, pad = 101, 102, 0
    batch = collate([[cls, 5, 6, sep, 7, 8, sep], [cls, 9, sep]], [1, 0], pad, sep)
    assert batch.token_type_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]]  # pads: 0
    assert set(batch.inputs()) == {"input_ids", "attention_mask", "token_type_ids"}
    assert collate([[cls, 5, sep]], None, pad).token_type_ids is None  # no sep id: the model's default
