"""Drift monitoring's parts: the endpoint's window, the tests and their verdicts, the retrain decision."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from bertops.monitoring import drift
from bertops.monitoring.monitor import decide_retrain, workspace_busy
from bertops.monitoring.window import (
    Sampler,
    Shards,
    Window,
    Windows,
    answer_features,
    answered_only,
    compatible,
    decode_arrays,
    encode_arrays,
    merge,
    text_features,
)


def _features(n: int, rng: np.random.Generator, length_mean: float = 25.0, positive: float = 0.5, dims: int = 16,
              shift: float = 0.0) -> tuple[dict, np.ndarray]:  # fmt: skip
    tokens = np.clip(rng.poisson(length_mean, n), 3, 128).astype(np.int16)
    p = np.clip(rng.beta(8, 1, n), 0.5, 1.0)
    label = (rng.random(n) < positive).astype(np.int16)
    embeddings = rng.normal(size=(n, dims)) + shift
    features = {"tokens": tokens, "unknown_share": np.zeros(n, np.float32), "truncated": tokens >= 128,
                "label": label, "confidence": p.astype(np.float32)}  # fmt: skip
    return features, embeddings.astype(np.float16)


def _reference(n: int, seed: int, **kw) -> dict:
    features, embeddings = _features(n, np.random.default_rng(seed), **kw)
    return {**features, "embedding": embeddings}


def judge(reference: dict, live: dict, min_window: int = 100, alpha: float = 0.01) -> drift.DriftReport:
    return drift.compare(reference, live, ["negative", "positive"], alpha, min_window, 999, 400, seed=0)


def test_text_features_count_tokens_unknown_pieces_and_truncation():
    ids = np.array([[101, 100, 7, 102, 0], [101, 5, 6, 7, 102]])
    mask = (ids != 0).astype(np.int64)
    got = text_features(ids, mask, unk_id=100, truncated=[False, True])
    assert got["tokens"].tolist() == [4, 5]
    assert got["unknown_share"].tolist() == pytest.approx([0.5, 0.0])  # one of the 2 pieces between [CLS]/[SEP]
    assert got["truncated"].tolist() == [False, True]
    answers = answer_features(np.array([[0.2, 0.8], [0.9, 0.1]]))
    assert answers["label"].tolist() == [1, 0] and answers["confidence"].tolist() == pytest.approx([0.8, 0.9])


def test_the_window_keeps_the_newest_inputs_in_order_and_wraps():
    window = Window(size=5)
    for start in range(0, 12, 3):  # 12 inputs in batches of 3 into a window of 5
        n = np.arange(start, start + 3)
        window.record({"tokens": n.astype(np.int16), "unknown_share": np.zeros(3), "truncated": np.zeros(3, bool),
                       "label": (n % 2).astype(np.int16), "confidence": np.full(3, 0.9)},
                      np.repeat(n[:, None], 4, axis=1).astype(np.float16))  # fmt: skip
    snap = window.snapshot()
    assert snap["tokens"].tolist() == [7, 8, 9, 10, 11]
    assert snap["embedding"][:, 0].tolist() == [7, 8, 9, 10, 11]
    assert window.snapshot(last=2)["tokens"].tolist() == [10, 11]
    window.record({"tokens": np.arange(20, 28, dtype=np.int16), "unknown_share": np.zeros(8),
                   "truncated": np.zeros(8, bool)})  # fmt: skip  # bigger than the window, no answers (e.g. NER)
    snap = window.snapshot()
    assert snap["tokens"].tolist() == [23, 24, 25, 26, 27]
    assert len(snap["label"]) == 0 and len(snap["embedding"]) == 0  # unanswered inputs carry no answer columns
    windows = Windows(4, max_versions=2)
    one = {"tokens": np.array([3], np.int16), "unknown_share": np.zeros(1), "truncated": [False]}
    windows.record("m:1", one)
    assert windows.snapshot("m:2") is None and windows.summary() == {"m:1": {"held": 1, "seen": 1}}
    windows.record("m:2", one)
    windows.record("m:1", one)  # m:1 is now the most recent
    windows.record("m:3", one)  # a third version: the least recently recorded (m:2) goes
    assert set(windows.summary()) == {"m:1", "m:3"} and windows.summary()["m:1"]["seen"] == 2


def _worker_traffic(windows: Windows, version: str, start: int, n: int, when: float, answered: bool = True,
                    dims: int = 4) -> None:  # fmt: skip
    tokens = np.arange(start, start + n, dtype=np.int16)
    features = {"tokens": tokens, "unknown_share": np.zeros(n, np.float32), "truncated": np.zeros(n, bool)}
    if answered:
        features.update(label=(tokens % 2).astype(np.int16), confidence=np.full(n, 0.9, np.float32))
    vectors = np.repeat(tokens[:, None], dims, axis=1).astype(np.float16) if answered else None
    windows.record(version, features, vectors, now=when)


def test_the_windows_of_every_worker_are_shared_and_judged_together(tmp_path):
    """Two workers (and a third that stopped) write their windows to one store; a reader sees the
    union of the live ones, and `last` keeps the newest rows by when they were recorded."""
    store = f"file://{tmp_path}/store"
    now = time.time()
    a, b, gone = Windows(100), Windows(100), Windows(100)
    _worker_traffic(a, "m:1", 0, 60, now - 30)
    _worker_traffic(b, "m:1", 1000, 20, now - 20)
    _worker_traffic(b, "m:1", 2000, 10, now - 10, answered=False)  # /embed-like inputs: no label, no embedding
    _worker_traffic(gone, "m:1", 5000, 50, now - 700)
    _worker_traffic(a, "m:2", 9000, 5, now - 5)  # another version's window stays apart
    Shards(store, "gone-1", every_s=10, max_age_s=120).publish(gone, now - 600, {"m:1"})  # stopped ten minutes ago
    sa, sb = Shards(store, "host-a-1", 10, 120), Shards(store, "host-b-2", 10, 120)
    sa.publish(a, now, {"m:1", "m:2"})
    sb.publish(b, now, {"m:1"})
    folder = tmp_path / "store/m/windows/1"
    assert sorted(p.name for p in folder.iterdir()) == ["gone-1.npz", "host-a-1.npz", "host-b-2.npz"]
    fresh = sa.fresh("m:1", now)
    assert sorted(meta["worker"] for meta, _ in fresh) == ["host-a-1", "host-b-2"]  # the stopped worker is left out
    whole = answered_only(merge(fresh))
    assert sorted(whole["tokens"].tolist()) == sorted([*range(60), *range(1000, 1020), *range(2000, 2010)])
    assert len(whole["label"]) == len(whole["embedding"]) == 80  # only answered inputs carry answers
    assert sorted(whole["embedding"][:, 0].tolist()) == sorted([*range(60), *range(1000, 1020)])
    cut = merge(fresh, last=45)  # the newest 45: b's 30 (10 and 20 s ago), then a's last 15 (30 s ago)
    assert cut["tokens"].tolist() == [*range(45, 60), *range(1000, 1020), *range(2000, 2010)]
    assert [meta["worker"] for meta, _ in sa.fresh("m:2", now)] == ["host-a-1"]
    assert sa.fresh("m:404", now) == []

    # what a reader leaves out: a half-written shard, one of another shape, embeddings of another width
    whole_file = (folder / "host-b-2.npz").read_bytes()
    (folder / "cut-3.npz").write_bytes(whole_file[: len(whole_file) // 2])
    np.savez(folder / "odd-4.npz", __meta__=np.frombuffer(b'{"written_at": %f, "worker": "odd-4", "seen": 1}' % now,
             dtype=np.uint8), tokens=np.arange(3))  # fmt: skip
    wide = Windows(100)
    _worker_traffic(wide, "m:1", 7000, 5, now - 1, dims=8)
    Shards(store, "wide-5", 10, 120).publish(wide, now, {"m:1"})
    read = sb.fresh("m:1", now)
    assert sorted(meta["worker"] for meta, _ in read) == ["host-a-1", "host-b-2", "wide-5"]
    assert 7000 not in merge(read)["tokens"].tolist()  # not the width of the first shard's embeddings
    assert sorted(meta["worker"] for meta, _ in compatible(read)) == ["host-a-1", "host-b-2"]  # nor counted
    # a shard the store dates from long ago (its worker gone an hour) is removed, not read
    os.utime(folder / "gone-1.npz", (now - 5000, now - 5000))
    sb.fresh("m:1", now)
    assert not (folder / "gone-1.npz").exists() and (folder / "host-a-1.npz").exists()


def test_a_worker_rewrites_its_shard_when_it_changed_and_as_a_heartbeat(tmp_path):
    windows, shards = Windows(10), Shards(str(tmp_path), "w", every_s=10, max_age_s=120)
    _worker_traffic(windows, "m:1", 0, 3, 999.0)
    _worker_traffic(windows, "m:0", 0, 3, 999.0)  # a version this worker no longer serves
    shards.publish(windows, 1000.0, {"m:1"})
    assert not (tmp_path / "m/windows/0").exists()  # left to age out (a prune may have removed it)
    assert shards.due("m:1", 3, 1005.0) is False  # nothing new
    assert shards.due("m:1", 4, 1005.0) is False  # new, but written 5 s ago: at most every 10 s
    assert shards.due("m:1", 4, 1010.0) is True
    assert shards.due("m:1", 3, 1030.0) is True  # unchanged for 3 x every_s: a heartbeat keeps it fresh
    shards.publish(windows, 1005.0, set(), force="m:1")  # before answering a window request: whatever the timing
    assert shards.fresh("m:1", 1005.0)[0][0]["written_at"] == 1005.0
    shards.write("m:1", windows.rows("m:1"), 2, 1006.0)  # rows taken before the last write's: not written
    assert shards.fresh("m:1", 1006.0)[0][0]["seen"] == 3


def test_arrays_survive_the_json_round_trip_and_bad_ones_are_named():
    features, embeddings = _features(7, np.random.default_rng(0))
    arrays = {**features, "embedding": embeddings}
    back = decode_arrays(json.loads(json.dumps(encode_arrays(arrays))))
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array)
    with pytest.raises(ValueError, match="'tokens'"):
        decode_arrays({"tokens": {"dtype": "<i2", "shape": [3], "data": "not base64!"}})


def test_in_distribution_windows_rarely_alarm():
    reference = _reference(800, seed=1)
    alarms = sum(judge(reference, _reference(500, seed=100 + i)).verdict == drift.DRIFT for i in range(12))
    assert alarms <= 1


@pytest.mark.parametrize(
    ("shift", "feature"),
    [({"length_mean": 12.0}, "tokens"), ({"positive": 0.8}, "label"), ({"shift": 0.5}, "embedding")],
)
def test_a_shifted_window_is_caught_on_the_feature_that_moved(shift, feature):
    report = judge(_reference(800, seed=1), _reference(500, seed=2, **shift))
    assert report.verdict == drift.DRIFT and feature in report.drifted
    assert report.features[[f.feature for f in report.features].index(feature)].p_value < report.threshold


def test_a_window_too_small_gets_no_verdict_and_a_missing_reference_feature_is_not_guessed():
    report = judge(_reference(800, seed=1), _reference(60, seed=2, length_mean=5.0))
    assert report.verdict == drift.INSUFFICIENT and not report.features and "at least 100" in report.message
    reference = {k: v for k, v in _reference(800, seed=1).items() if k != "embedding"}
    report = judge(reference, _reference(300, seed=2))
    embedding = next(f for f in report.features if f.feature == "embedding")
    assert embedding.verdict == drift.MISSING and embedding.p_value is None
    assert report.threshold == pytest.approx(0.01 / 5)  # the missing feature is not counted as judged


def test_mmd_permutation_p_value_is_uniform_ish_under_the_null_and_small_under_a_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 8))
    _, p_same = drift.mmd_test(x, rng.normal(size=(150, 8)), 199, seed=0)
    statistic, p_moved = drift.mmd_test(x, rng.normal(size=(150, 8)) + 0.6, 199, seed=0)
    assert p_same > 0.01 and p_moved == pytest.approx(1 / 200) and statistic > 0


def test_psi_is_zero_for_the_same_sample_and_grows_with_the_shift():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=5000)
    assert drift.psi(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert drift.psi(ref, ref + 0.2) < drift.psi(ref, ref + 1.0)


def test_drift_starts_one_retrain_then_cools_down_and_never_while_one_runs():
    now = 1_000_000.0
    assert decide_retrain("ok", now, None, 3600, None).trigger is False
    assert decide_retrain("insufficient", now, None, 3600, None).trigger is False
    assert decide_retrain("drift", now, None, 3600, None).trigger is True
    cooling = decide_retrain("drift", now, now - 600, 3600, None)
    assert cooling.trigger is False and "cooling down" in cooling.reason and "3000s" in cooling.reason
    assert decide_retrain("drift", now, now - 3601, 3600, None).trigger is True
    busy = decide_retrain("drift", now, None, 3600, "pid 7 since then")
    assert busy.trigger is False and "already running" in busy.reason


def test_workspace_busy_reads_the_lock_without_taking_it(tmp_path):
    from bertops.atomic import workspace_lock

    assert workspace_busy(tmp_path) is None
    with workspace_lock(tmp_path) as held:
        assert held is None
        assert workspace_busy(tmp_path) == (tmp_path / ".bertops-run.lock").read_text()
        assert workspace_busy(tmp_path).startswith(f"pid {os.getpid()}")
    assert workspace_busy(tmp_path) is None  # released: the file is emptied
    (tmp_path / ".bertops-run.lock").write_text("pid 999999999 since long ago")  # its holder is gone
    assert workspace_busy(tmp_path) is None


def test_the_sampler_writes_its_share_of_requests_as_json_lines(tmp_path):
    sampler = Sampler(0.25, tmp_path)
    texts = [f"text {i}" for i in range(40)]
    sampler.offer("bertops-sst2:v1", texts, [{"label": "positive"}] * 40)
    deadline = time.monotonic() + 10
    while sampler.written < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    files = list((tmp_path / "bertops-sst2" / "v1").glob("*.jsonl"))
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(rows) == 10 and sampler.dropped == 0  # every fourth, not a random draw
    assert rows[0]["input"] == "text 3" and rows[0]["answer"] == {"label": "positive"}


def test_the_drift_cool_down_state_lives_in_the_model_store(tmp_path):
    from bertops.model_store import ModelStore

    store = ModelStore(str(tmp_path / "store"), tmp_path / "cache")
    assert store.read_state("bertops-sst2", "drift-state") == {}
    store.write_state("bertops-sst2", "drift-state", {"last_trigger": 12.5, "version": "v1"})
    other_machine = ModelStore(str(tmp_path / "store"), tmp_path / "elsewhere")  # the same store, another cache
    assert other_machine.read_state("bertops-sst2", "drift-state") == {"last_trigger": 12.5, "version": "v1"}
    assert not list((tmp_path / "store" / "bertops-sst2").glob("*.partial"))


def test_monitor_settings_are_checked_when_the_config_loads():
    from bertops.config import ConfigError
    from tests.conftest import smoke_config

    with pytest.raises(ConfigError, match="monitor.alpha"):
        smoke_config(["monitor.alpha=1.5"])
    with pytest.raises(ConfigError, match="serve.monitor.sample_rate"):
        smoke_config(["serve.monitor.sample_rate=2"])
    with pytest.raises(ConfigError, match="share_max_age_s"):
        smoke_config(["serve.monitor.share_every_s=40"])  # a live worker's shard would go stale between writes
