import os

import pytest
import torch

from bertops.config import ConfigError
from bertops.training.optim import linear_warmup_decay
from bertops.training.setup import pick_device, pick_precision
from tests.conftest import tiny_bert_classifier


def test_bf16_and_fp16_are_refused_on_cpu():
    for precision in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="GPUs"):
            pick_precision(precision, torch.device("cpu"))
    assert pick_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_a_gpu_is_explained():
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")


def test_warmup_then_linear_decay_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = linear_warmup_decay(opt, warmup=2, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_an_unreachable_ray_address_is_a_clear_error(monkeypatch):
    from bertops.config import ConfigError
    from bertops.training.ray_adapter import connect

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(
        ConfigError, match=r"cannot reach the Ray cluster at RAY_ADDRESS='127.0.0.1:1'.*unset RAY_ADDRESS"
    ):
        connect()
    assert os.environ["RAY_ADDRESS"] == "127.0.0.1:1"  # left as the user set it


def test_packed_data_unpacks_once_per_content(tmp_path):
    from bertops.training.ray_adapter import pack_data, unpack_data

    corpus = tmp_path / "sst2"
    (corpus / "tokenizer").mkdir(parents=True)
    (corpus / "train.parquet").write_bytes(b"rows")
    (corpus / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    bundle = pack_data(corpus)
    local = unpack_data(bundle)
    assert (local / "sst2" / "train.parquet").read_bytes() == b"rows"
    assert (local / "sst2" / "tokenizer" / "vocab.txt").read_text() == "[PAD]\n"
    (corpus / "train.parquet").write_bytes(b"other rows")
    assert pack_data(corpus)["sha256"] != bundle["sha256"] and unpack_data(pack_data(corpus)) != local


def test_layer_maps_and_the_distillation_loss():
    from bertops.training.distill import distillation_loss, layer_map

    assert layer_map(6, 3, "every-other") == [1, 3, 5] and layer_map(12, 4, "every-other") == [2, 5, 8, 11]
    assert layer_map(6, 2, "first") == [0, 1] and layer_map(6, 2, "last") == [4, 5]
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.isclose(distillation_loss(logits, logits * 3, labels, 2.0, 0.0), ce)  # alpha 0: labels only
    assert float(distillation_loss(logits, logits, labels, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-6)  # same logits
    # T^2 scaling: the soft term at T=4 is on the scale of T=1's, not 16x smaller
    far = torch.tensor([[3.0, -3.0], [-3.0, 3.0]])
    t1, t4 = (float(distillation_loss(logits, far, labels, t, 1.0)) for t in (1.0, 4.0))
    assert 0.1 < t4 / t1 < 10


def test_a_checkpoint_resumes_every_generator_and_loads_without_running_code(tmp_path):
    """The training state round-trips through weights_only loading (tensors and plain values), the
    generators continue exactly where they were, and a file carrying an object that would run code
    on load is ignored (training starts over) instead of executed."""
    import pickle
    import random

    import numpy as np
    import torch

    from bertops.training.checkpoint import Checkpoint, restore_rng, rng_state

    checkpoint = Checkpoint(tmp_path, {"prepared": "abc", "params": {}, "world": 1})
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint.save(
        {"model": {"w": torch.ones(2)}, "step": 7, "history": [{"step": 1, "loss": 0.5}], "rng": rng_state()}
    )
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    loaded = checkpoint.load()
    assert loaded is not None and loaded["step"] == 7 and torch.equal(loaded["model"]["w"], torch.ones(2))
    restore_rng(loaded["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected

    class Exploit:
        def __reduce__(self):
            return (print, ("this ran on load",))

    with open(checkpoint.path, "wb") as fh:
        pickle.dump({"fingerprint": checkpoint.fingerprint, "step": Exploit()}, fh)
    assert checkpoint.load() is None
    assert Checkpoint(tmp_path, {"prepared": "other", "params": {}, "world": 1}).load() is None


def test_layer_wise_lr_decay_gives_each_depth_its_rate_and_the_schedule_keeps_the_ratios():
    from bertops.training.optim import build_optimizer, layer_depth

    model = tiny_bert_classifier()
    optimizer = build_optimizer(model, 1e-3, 0.01, torch.device("cpu"), layer_decay=0.5)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    # 2 layers: head at lr, layer 1 at lr/2, layer 0 at lr/4, embeddings at lr/8
    assert rate[id(params["classifier.weight"])] == pytest.approx(1e-3)
    assert rate[id(params["bert.pooler.dense.weight"])] == pytest.approx(1e-3)
    assert rate[id(params["bert.encoder.layer.1.output.dense.weight"])] == pytest.approx(5e-4)
    assert rate[id(params["bert.encoder.layer.0.attention.self.query.bias"])] == pytest.approx(2.5e-4)
    assert rate[id(params["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1.25e-4)
    # weight decay still skips biases and LayerNorm at every depth
    assert decay[id(params["bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert decay[id(params["bert.encoder.layer.0.output.LayerNorm.weight"])] == 0.0
    assert decay[id(params["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(params)
    assert layer_depth("bert.encoder.layer.11.output.dense.weight", 12) == 12

    # the warmup/decay schedule scales every group by the same factor
    scheduler = linear_warmup_decay(optimizer, warmup=0, total=4)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    rates = [g["lr"] / g["initial_lr"] for g in optimizer.param_groups]
    assert rates == pytest.approx([0.5] * len(rates))


def test_without_layer_decay_the_optimizer_keeps_its_two_groups():
    from bertops.training.optim import build_optimizer

    optimizer = build_optimizer(tiny_bert_classifier(), 1e-3, 0.01, torch.device("cpu"))
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(1e-3, 0.01), (1e-3, 0.0)]
