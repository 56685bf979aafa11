import os

import pytest
import torch

from bertops.config import ConfigError
from bertops.training.loop import linear_warmup_decay, pick_device, pick_precision


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
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at RAY_ADDRESS='127.0.0.1:1'.*unset RAY_ADDRESS"):
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
