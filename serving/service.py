"""The bertops production endpoint (BentoML 1.4): `POST /classify` with adaptive batching.

`bertops package` writes `bertops_serving.json` beside this file (the model tag it packages and
the `serve` section of params.yaml) and builds a Bento from this folder, so a Bento always
carries exactly one model and its serving settings. BentoML adds /healthz, /livez, /readyz
and /metrics.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Annotated

import bentoml
from fastapi import FastAPI
from pydantic import Field

with bentoml.importing():
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

_SETTINGS_FILE = Path(__file__).with_name("bertops_serving.json")
if not _SETTINGS_FILE.is_file():
    raise RuntimeError(f"{_SETTINGS_FILE} is missing: build the service with `bertops package`, not by hand")
SETTINGS = json.loads(_SETTINGS_FILE.read_text())
SERVE = SETTINGS["serve"]

# Read-only GET routes beside BentoML's POST APIs (mounted as an ASGI app).
info_app = FastAPI()

Text = Annotated[str, Field(min_length=1, description="one text to classify (non-empty)")]


@bentoml.service(name="bertops", traffic={"timeout": 60})
@bentoml.asgi_app(info_app, path="/")
class Classifier:
    # Declared as a class attribute so that `bentoml build` packages the model into the Bento.
    model_ref = bentoml.models.BentoModel(SETTINGS["model_tag"])

    def __init__(self) -> None:
        path = self.model_ref.path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=True, attn_implementation="sdpa"  # the head's code is inside the model folder
        ).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.version = str(self.model_ref.tag)
        self.lineage = json.loads((Path(path) / "lineage.json").read_text())
        self.max_length = SETTINGS["max_length"]

    @bentoml.api(batchable=True, max_batch_size=SERVE["max_batch_size"], max_latency_ms=SERVE["max_latency_ms"])
    def classify(
        self, texts: Annotated[list[Text], Field(min_length=1, max_length=SERVE["max_texts_per_request"])]
    ) -> list[dict]:
        """Label and per-label probabilities for each text (the model version answers too)."""
        texts = [self.normalize(t) for t in texts]
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():  # per call: API methods run in worker threads
            probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1).numpy()
        return [
            {
                "label": self.labels[int(np.argmax(p))],
                "probabilities": {name: round(float(v), 6) for name, v in zip(self.labels, p)},
                "model_version": self.version,
            }
            for p in probs
        ]

    @staticmethod
    def normalize(text: str) -> str:
        """The same normalisation `bertops prepare` applied to the training text."""
        text = " ".join(unicodedata.normalize(SETTINGS["unicode_form"], text).split())
        return text.lower() if SETTINGS["lowercase"] else text

    @info_app.get("/metadata")
    def metadata(self) -> dict:
        """The model version, its lineage, label map and max sequence length."""
        return {"model_version": self.version, "labels": self.labels, "max_length": self.max_length,
                "lineage": {k: v for k, v in self.lineage.items() if k != "params"}}
