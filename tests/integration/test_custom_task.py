"""A fifth task, defined here in the tests alone, goes through prepare, finetune, evaluate, gate,
package and the endpoint without touching any generic module: the proof that a task is one
folder behind one interface (`bertops.tasks.base.Task`).

The task is sentence regression (a score in [0, 1] per text, the shape of STS-B or a rating):
SST-2 sentences scored 0.0 (negative) or 1.0 (positive), learnt with a one-output head and MSE,
selected and gated on Pearson correlation, and served by its own BentoML class at POST /score.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import datasets_root, smoke_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "sentence_regression"

# The task's service: a class over the shared endpoint (serving/service.py), shipped into the Bento
# by the task's bento_files(); `package` builds the Bento with it because the task names it.
SERVICE = '''
import bentoml
import engine
import service


@bentoml.service(name="bertops", traffic={"timeout": 60}, workers=1)
@bentoml.asgi_app(engine.info_app(service._describe, service._reload), path="/")
class Regression(service.Endpoint):
    route = "/score"

    @bentoml.api
    async def score(self, texts: service.Texts) -> list[dict]:
        """One score per text (through the shared batcher: a lone request never waits)."""
        return await self.batched("/score", self._score, list(texts))

    def _score(self, texts: list, which: str = "production") -> list[dict]:
        m = self.served(which)  # production, or the canary/shadow this batch runs on
        if "fail on purpose" in texts:  # a model call that raises: the test's 5xx
            raise RuntimeError("failing on purpose")
        values, truncated = self._infer(m, "/score", texts, "logits")
        return [{"score": round(float(v[0]), 6), "model_version": m.version, "truncated": cut}
                for v, cut in zip(values, truncated)]


Regression.add_asgi_middleware(engine.guard(service.SETTINGS, "/score"))
'''


def _pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _make_task(service_file: Path):
    """The whole task: every hook, built on the generic helpers that built-in tasks use."""
    import torch

    from bertops.atomic import replace_dir, staging_dir
    from bertops.data.batching import collate
    from bertops.data.checks import Check
    from bertops.data.prepare import PrepareResult, load_prepared, require_validated, token_stats, write_prepare_reports
    from bertops.data.sources import load_raw
    from bertops.data.validation import ValidationSuite
    from bertops.encoding import encode, normalize_input, to_feeds
    from bertops.evaluation.evaluate import Evaluation
    from bertops.evaluation.gate import GateRules
    from bertops.evaluation.serving_cost import latency_profile, model_size_mb
    from bertops.lineage import files_sha256
    from bertops.models.classifier import checked_candidate, load_model_folder
    from bertops.models.pretrained import describe_model_source, load_tokenizer, resolve_model_source
    from bertops.tasks.base import Task
    from bertops.training.loop import TrainingSpec
    from bertops.training.predict import predict_logits

    def predict(model, tokenizer, frame) -> np.ndarray:
        sequences = frame["input_ids"].map(list).tolist()
        logits = predict_logits(model, sequences, tokenizer.pad_token_id, 32, torch.device("cpu"))
        return logits[:, 0]

    class SentenceRegression(Task):
        name = NAME
        service = "service_regression:Regression"
        route = "/score"

        def validation_suite(self, config, root):
            frames, manifest = load_raw(config, root)
            text, score = config.ingest.text_column, config.ingest.label_column
            # tables are read as text (bytes stay visible): the score column is checked as a number
            tables = {
                split: frame.assign(**{score: pd.to_numeric(frame[score], errors="coerce")})
                for split, frame in frames.items()
            }
            checks = []
            for split in tables:
                checks += [
                    Check(
                        split, "text is not blank", "ExpectColumnValuesToMatchRegex", {"column": text, "regex": r"\S"}
                    ),
                    Check(split, "score is a number", "ExpectColumnValuesToNotBeNull", {"column": score}),
                    Check(
                        split,
                        "score within [0, 1]",
                        "ExpectColumnValuesToBeBetween",
                        {"column": score, "min_value": 0.0, "max_value": 1.0},
                    ),
                ]
            return ValidationSuite(
                checks, tables, [text, score], {k: len(v) for k, v in frames.items()}, manifest["data_hash"]
            )

        def prepare(self, config, root):
            frames, manifest = load_raw(config, root)
            require_validated(config, root, manifest["data_hash"])
            prep, ing = config.prepare, config.ingest
            tokenizer = load_tokenizer(config.finetune.model)
            train = frames["train"].sample(frac=1.0, random_state=prep.seed).reset_index(drop=True)
            cut = int(len(train) * prep.validation_fraction)
            splits = {"train": train.iloc[cut:], "validation": train.iloc[:cut], "eval": frames["eval"]}
            out_dir = root / config.paths.prepared / ing.dataset
            staging = staging_dir(out_dir)
            stats = {}
            for split, frame in splits.items():
                texts = [normalize_input(t, prep.unicode_form, prep.lowercase) for t in frame[ing.text_column]]
                encoded = encode(tokenizer, texts, prep.max_length)
                pd.DataFrame(
                    {
                        "text": texts,
                        "score": frame[ing.label_column].astype(float).tolist(),
                        "input_ids": encoded.input_ids,
                    }
                ).to_parquet(staging / f"{split}.parquet", index=False)
                stats[split] = token_stats(encoded.lengths, prep.max_length)
            (staging / "labels.json").write_text(json.dumps({"id2label": {0: "score"}}) + "\n")
            prepared_hash = files_sha256([staging / f"{s}.parquet" for s in splits] + [staging / "labels.json"])
            (staging / "meta.json").write_text(
                json.dumps(
                    {
                        "dataset": ing.dataset,
                        "task": NAME,
                        "data_hash": manifest["data_hash"],
                        "prepared_hash": prepared_hash,
                        "tokenizer": config.finetune.model,
                        "max_length": prep.max_length,
                    }
                )
            )
            replace_dir(staging, out_dir)
            result = write_prepare_reports(config, root, out_dir, {k: list(v.index) for k, v in splits.items()}, stats)
            assert isinstance(result, PrepareResult)
            return result

        def training_spec(self, config, root):
            from transformers import AutoModelForSequenceClassification

            cfg = config.finetune
            tokenizer = load_tokenizer(cfg.model)

            def build(_id2label):
                return AutoModelForSequenceClassification.from_pretrained(
                    resolve_model_source(cfg.model),
                    num_labels=1,
                    problem_type="regression",
                    hidden_dropout_prob=cfg.dropout,
                    attn_implementation="sdpa",
                )

            def batch_of(sequences, scores, pad_id, sep_id):
                batch = collate(sequences, None, pad_id, sep_id)
                batch.labels = torch.as_tensor(scores, dtype=torch.float32)
                return batch

            def score(model, frame, device, precision):
                return _pearson(predict(model, tokenizer, frame), frame["score"])

            return TrainingSpec(
                stage="finetune",
                section=cfg,
                tokenizer=cfg.model,
                parent=describe_model_source(cfg.model),
                build=build,
                out_dir=root / config.paths.models / config.ingest.dataset,
                lineage={"task": NAME},
                targets=lambda frame: frame["score"].tolist(),
                collate=batch_of,
                score=score,
                metric="pearson",
            )

        def evaluate(self, config, root):
            from transformers import AutoModelForSequenceClassification

            frames, _, meta = load_prepared(config, root)
            model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
            model, tokenizer = load_model_folder(model_dir, AutoModelForSequenceClassification)
            evals = frames["eval"]
            predicted = predict(model, tokenizer, evals)
            gold = evals["score"].to_numpy()

            def request(text):  # one /score request as the endpoint runs it
                encoded = encode(tokenizer, [normalize_input(text)], config.prepare.max_length)
                feeds = to_feeds(encoded.input_ids, encoded.token_type_ids, tokenizer.pad_token_id)
                with torch.inference_mode():
                    return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits

            report = {
                "task": NAME,
                "examples": len(evals),
                "pearson": _pearson(predicted, gold),
                "mse": float(((predicted - gold) ** 2).mean()),
                "model_sha256": lineage["model_sha256"],
                "serving": {
                    "model_size_mb": model_size_mb(model_dir),
                    "latency": latency_profile(request, evals["text"].tolist(), 10),
                },
                "champion": None,
            }
            summary = f"## Regression on {len(evals)} sentences\n\nPearson **{report['pearson']:.4f}**\n"
            return Evaluation(report, report, summary, {"predictions": predicted})

        def gate_rules(self, policy):
            return GateRules(
                (("pearson", "pearson", 0.3, ">="), ("mse", "mse", 0.22, "<=")),
                paired=False,
                champion_metric=("pearson", "pearson"),
            )

        def bento_files(self):
            return {"service_regression.py": service_file}

    return SentenceRegression()


def _corpus(folder: Path) -> Path:
    """SST-2 rows as a scored jsonl corpus: 0.0 for negative, 1.0 for positive."""
    folder.mkdir(parents=True)
    for split, source, rows in (("train", "train.tsv", 600), ("dev", "dev.tsv", 120)):
        frame = pd.read_csv(datasets_root() / "sst2" / source, sep="\t", quoting=3).head(rows)
        frame = frame.assign(score=frame["label"].astype(float)).drop(columns="label")
        frame.to_json(folder / f"{split}.jsonl", orient="records", lines=True)
    return folder


def test_a_task_defined_in_the_tests_runs_through_every_stage_and_the_endpoint(tmp_path: Path):
    from bertops import server
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import package, promote
    from bertops.tasks import get_task, register_task
    from bertops.training.finetune import finetune

    service_file = tmp_path / "service_regression.py"
    service_file.write_text(SERVICE)
    register_task(_make_task(service_file))
    assert get_task(NAME).name == NAME
    cfg = smoke_config(
        [
            f"ingest.task={NAME}",
            "ingest.dataset=sst2-scores",
            f"ingest.search_paths=['{_corpus(tmp_path / 'src')}']",
            "ingest.text_column=sentence",
            "ingest.label_column=score",
            "package.model_name=bertops-scores",
            "serve.port=3931",
        ]
    )
    root = tmp_path / "ws"
    root.mkdir()
    ingest(cfg, root)
    validate(cfg, root)
    assert prepare(cfg, root).rows == {"train": 480, "validation": 120, "eval": 120}
    result = finetune(cfg, root)
    assert result.validation_metric == "pearson" and result.steps == 60  # 2 epochs of 480 rows, batch 16
    report = evaluate(cfg, root)
    # 60 steps learn sentiment as a score: a broken pipeline (untrained head, shuffled targets) stays near 0
    assert report["pearson"] > 0.3, report
    arrays = root / "reports/evaluate/arrays"
    assert np.load(arrays / "predictions.npy").shape == (120,)  # one score per eval row
    assert json.loads((arrays / "index.json").read_text())["predictions"]["shape"] == [120]
    decision = gate(cfg, root)
    assert decision.approved, decision.reasons
    assert [c.name for c in decision.checks][:2] == ["pearson", "mse"]

    packaged = package(cfg, root)
    promote(cfg, root)
    import bentoml

    # the Bento carries the task's own service module and settings; nothing was written into the workspace
    source = Path(bentoml.bentos.get(packaged.bento_tag).path) / "src"
    settings = json.loads((source / "bertops_serving.json").read_text())
    assert settings["task"] == NAME and (source / "service_regression.py").is_file()
    assert not (root / "serving").exists()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        url = server.start_detached(cfg, timeout=240)
        texts = ["a gripping , beautifully acted film", "a dull , lifeless mess"]
        reply = httpx.post(f"{url}/score", json={"texts": texts}, timeout=60)
        assert reply.status_code == 200, reply.text
        good, bad = reply.json()
        assert good["model_version"] == packaged.model_tag and good["score"] > bad["score"]
        other = httpx.post(f"{url}/classify", json={"texts": texts}, timeout=30)
        assert other.status_code == 400 and "/score" in other.text  # the route of another task names ours
        assert httpx.get(f"{url}/metadata", timeout=10).json()["task"] == NAME
        # a failing model call is a 5xx counted for the version that failed, and the endpoint goes on
        failed = httpx.post(f"{url}/score", json={"texts": ["fail on purpose"]}, timeout=60)
        assert failed.status_code >= 500, failed.text
        assert httpx.post(f"{url}/score", json={"texts": texts}, timeout=60).status_code == 200
        exposition = httpx.get(f"{url}/metrics", timeout=10).text
        tag = packaged.model_tag

        def count(series: str) -> float:
            found = re.search(rf'^{series}{{endpoint="/score",version="{re.escape(tag)}"}} (\S+)$', exposition, re.M)
            assert found, f"{series} for {tag} is not in /metrics:\n{exposition[-3000:]}"
            return float(found.group(1))

        assert count("bertops_failures_total") == 1.0 and count("bertops_answers_total") >= 2.0
    finally:
        server.stop(cfg)
        os.chdir(cwd)
