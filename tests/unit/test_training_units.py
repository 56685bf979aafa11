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
