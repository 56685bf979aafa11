import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from bertops.tasks.qa.core import (
    QAExample,
    SquadFormatError,
    answer_f1,
    build_features,
    normalize_answer,
    postprocess,
    read_squad,
    split_by_article,
    squad_scores,
    validate_examples,
)

# Small windows so that real SQuAD paragraphs (~750 characters) need several of them.
WINDOW = {"max_length": 128, "doc_stride": 32, "max_query_length": 24}


@pytest.fixture(scope="module")
def dev(datasets: Path) -> list[QAExample]:
    return read_squad(datasets / "squad-v1.1" / "dev-v1.1.json")


@pytest.fixture(scope="module")
def sample(dev) -> list[QAExample]:
    """~300 questions spread over every article (the first 300 would all be Super Bowl 50)."""
    return dev[::35]


@pytest.fixture(scope="module")
def tokenizer():
    from bertops.models.pretrained import load_tokenizer

    return load_tokenizer("packaged")


@pytest.fixture(scope="module")
def train_features(tokenizer, sample) -> list[dict]:
    return build_features(tokenizer, sample, training=True, **WINDOW)


def spikes(features: list[dict], where: list[tuple[int, int]], pad: int = 0) -> tuple[list, list]:
    """Start/end logits that are 0 everywhere but 10 at the given (start, end) token per feature."""
    starts, ends = [], []
    for feature, (s, e) in zip(features, where):
        start, end = np.zeros(len(feature["input_ids"]) + pad), np.zeros(len(feature["input_ids"]) + pad)
        start[s], end[e] = 10.0, 10.0
        starts.append(start)
        ends.append(end)
    return starts, ends


def write_squad(tmp_path: Path, document) -> Path:
    path = tmp_path / "squad.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def squad_doc(qa: dict, context: str = "Paris is the capital of France.") -> dict:
    return {"version": "1.1", "data": [{"title": "France", "paragraphs": [{"context": context, "qas": [qa]}]}]}


# --- reading and validation ------------------------------------------------------------------


def test_read_squad_reads_every_dev_question(dev):
    assert len(dev) == 10570
    assert len({e.title for e in dev}) == 48
    assert len({e.id for e in dev}) == 10570
    first = dev[0]
    assert first.id == "56be4db0acb8001400a502ec" and first.title == "Super_Bowl_50"
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.answers[0] == ("Denver Broncos", 177)
    assert first.context[177 : 177 + len("Denver Broncos")] == "Denver Broncos"


def test_real_dev_set_validates_clean(dev):
    assert validate_examples(dev, "dev-v1.1.json") == []


def test_read_squad_rejects_broken_files_naming_where(tmp_path):
    with pytest.raises(SquadFormatError, match=r"squad\.json: not valid JSON .*line 1"):
        read_squad(write_squad(tmp_path, '{"data": [}'))
    with pytest.raises(SquadFormatError, match=r"question 'q1' \(article 'France'\): missing key 'answers'"):
        read_squad(write_squad(tmp_path, squad_doc({"id": "q1", "question": "Capital?"})))
    bad_start = {"id": "q2", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": "0"}]}
    with pytest.raises(SquadFormatError, match=r"'q2'.*'answer_start' must be int, got str"):
        read_squad(write_squad(tmp_path, squad_doc(bad_start)))
    with pytest.raises(SquadFormatError, match="missing key 'data'"):
        read_squad(write_squad(tmp_path, {"version": "1.1"}))
    with pytest.raises(FileNotFoundError, match="no such SQuAD file"):
        read_squad(tmp_path / "absent.json")


def test_mismatched_answer_is_caught_naming_the_row(tmp_path):
    # The product issue: answer text that is not what the context holds at answer_start.
    qa = {"id": "q-shifted", "question": "Capital?", "answers": [{"text": "France", "answer_start": 20}]}
    examples = read_squad(write_squad(tmp_path, squad_doc(qa)))
    problems = validate_examples(examples, "squad.json")
    assert len(problems) == 1
    message = problems[0]
    assert "squad.json: question 'q-shifted' (article 'France')" in message
    assert "'France'" in message and "reads ' of Fr'" in message  # both the answer and what the context holds
    assert "set answer_start to 24" in message  # and how to fix it


def test_validation_reports_each_kind_of_bad_row():
    context = "Paris is the capital of France."
    examples = [
        QAExample("ok", "A", context, "Capital?", [("Paris", 0)]),
        QAExample("far", "A", context, "Capital?", [("Paris", 40)]),
        QAExample("negative", "A", context, "Capital?", [("Paris", -1)]),
        QAExample("no-question", "A", context, "  ", [("Paris", 0)]),
        QAExample("no-context", "B", "", "Capital?", [("Paris", 0)]),
        QAExample("no-answers", "B", context, "Capital?", []),
        QAExample("ok", "B", context, "Again?", [("Paris", 0)]),
        QAExample("missing", "B", context, "Capital?", [("Berlin", 0)]),
    ]
    problems = validate_examples(examples, "src")
    by_id = {p.split("'")[1]: p for p in problems}
    assert len(problems) == 7 and len(by_id) == 7
    assert "runs outside the context (31 characters)" in by_id["far"] and "occurs at 0" in by_id["far"]
    assert "runs outside the context" in by_id["negative"]
    assert "empty question" in by_id["no-question"]
    assert "empty context" in by_id["no-context"]
    assert "no answers" in by_id["no-answers"]
    assert "duplicate id, first seen in article 'A'" in by_id["ok"] and "(article 'B')" in by_id["ok"]
    assert "does not occur in the context at all" in by_id["missing"]


def test_validation_caps_the_list_and_counts_the_rest():
    examples = [QAExample(f"q{i}", "A", "some context", "why?", []) for i in range(27)]
    problems = validate_examples(examples, "src")
    assert len(problems) == 21
    assert "'q19'" in problems[19]
    assert problems[20] == "src: ... and 7 more problems (fix the ones above and validate again)"


def test_split_by_article_keeps_articles_whole_and_is_deterministic(dev):
    train, held_out = split_by_article(dev, eval_fraction=0.2, seed=7)
    assert {e.title for e in train}.isdisjoint({e.title for e in held_out})
    assert sorted(e.id for e in train + held_out) == sorted(e.id for e in dev)
    # Articles hold 96-810 questions, so the share can miss by up to about one article.
    assert abs(len(held_out) / len(dev) - 0.2) < 0.04
    held_out_ids = {e.id for e in held_out}
    assert [e.id for e in held_out] == [e.id for e in dev if e.id in held_out_ids]  # file order kept
    again = split_by_article(list(reversed(dev)), eval_fraction=0.2, seed=7)[1]
    assert {e.title for e in again} == {e.title for e in held_out}  # order of input does not matter
    other = split_by_article(dev, eval_fraction=0.2, seed=8)[1]
    assert {e.title for e in other} != {e.title for e in held_out}


def test_split_by_article_rejects_what_cannot_be_split(dev):
    with pytest.raises(ValueError, match="eval_fraction=1.0: must be strictly between 0 and 1"):
        split_by_article(dev, eval_fraction=1.0, seed=0)
    one_article = [e for e in dev if e.title == "Super_Bowl_50"]
    with pytest.raises(ValueError, match="1 article"):
        split_by_article(one_article, eval_fraction=0.1, seed=0)
    # A tiny fraction still leaves one article on each side.
    train, held_out = split_by_article(dev, eval_fraction=0.001, seed=0)
    assert len({e.title for e in held_out}) == 1 and train


# --- features ---------------------------------------------------------------------------------


def test_training_positions_point_at_the_answer(sample, train_features):
    assert {f["example_index"] for f in train_features} == set(range(len(sample)))
    positive = [f for f in train_features if f["start_position"] != 0]
    assert len(positive) >= len(sample)
    # Every answer is < 32 tokens, so some window holds it whole.
    assert {f["example_index"] for f in positive} == set(range(len(sample)))
    exact = 0
    for feature in positive:
        example = sample[feature["example_index"]]
        text, start = example.answers[0]
        s, e = feature["start_position"], feature["end_position"]
        assert s <= e
        span = feature["offsets"][s][0], feature["offsets"][e][1]
        aligned = {start, start + len(text)} <= {b for o in feature["offsets"] if o for b in o}
        if aligned:  # answer boundaries are token boundaries: the span is the answer, character for character
            assert example.context[span[0] : span[1]] == text
            exact += 1
        else:  # the answer cuts through a word piece ("gold" in "golden"): the smallest covering span
            assert span[0] <= start and start + len(text) <= span[1]
            assert feature["offsets"][s][1] > start and feature["offsets"][e][0] < start + len(text)
    assert exact >= 0.98 * len(positive)


def test_negative_windows_point_at_cls(sample, train_features, tokenizer):
    negative = [f for f in train_features if f["start_position"] == 0]
    assert negative, "small windows over ~750-character paragraphs must leave some windows without the answer"
    for feature in negative:
        assert feature["end_position"] == 0 and feature["input_ids"][0] == tokenizer.cls_token_id
        text, start = sample[feature["example_index"]].answers[0]
        context = [o for o in feature["offsets"] if o]
        assert context[0][0] > start or context[-1][1] < start + len(text)


def test_windows_overlap_by_the_stride_and_cover_the_context(sample, train_features, tokenizer):
    by_example: dict[int, list[dict]] = {}
    for feature in train_features:
        by_example.setdefault(feature["example_index"], []).append(feature)
    assert max(len(windows) for windows in by_example.values()) >= 3
    stride = WINDOW["doc_stride"]
    for index, windows in by_example.items():
        context_spans = [[o for o in w["offsets"] if o] for w in windows]
        for before, after in pairwise(context_spans):
            assert before[-stride:] == after[:stride]
        everything = tokenizer(sample[index].context, add_special_tokens=False, return_offsets_mapping=True)
        covered = {o for spans in context_spans for o in spans}
        assert covered == set(everything["offset_mapping"])
    for feature in train_features:
        assert len(feature["input_ids"]) == len(feature["token_type_ids"]) == len(feature["offsets"])
        assert len(feature["input_ids"]) <= WINDOW["max_length"]
        # Offsets only on context tokens: segment 1, never [CLS]/[SEP].
        for token, segment, offset in zip(feature["input_ids"], feature["token_type_ids"], feature["offsets"]):
            if offset is not None:
                assert segment == 1 and token not in (tokenizer.cls_token_id, tokenizer.sep_token_id)


@pytest.mark.parametrize(
    "answer, start",
    [
        ("NFL", 12),  # right after "(": a token ending exactly where the answer starts is not part of it
        ("league", 4),  # right before " (": ends where the next token starts
        (" said", 16),  # an offset on a space still lands on the word after it
        ("yes", 23),  # inside quotes
    ],
)
def test_answer_positions_at_punctuation_and_spaces(tokenizer, answer, start):
    context = 'The league (NFL) said "yes".'
    assert context[start : start + len(answer)] == answer
    example = QAExample("q", "T", context, "Who?", [(answer, start)])
    [feature] = build_features(tokenizer, [example], training=True, **WINDOW)
    s, e = feature["start_position"], feature["end_position"]
    assert context[feature["offsets"][s][0] : feature["offsets"][e][1]] == answer.strip()


def test_long_questions_are_cut_to_max_query_length(tokenizer):
    question = " ".join(["which"] * 60) + "?"
    example = QAExample("long", "T", "Paris is the capital of France.", "   " + question, [])
    [feature] = build_features(tokenizer, [example], max_length=64, doc_stride=8, max_query_length=10, training=False)
    first_sep = feature["input_ids"].index(tokenizer.sep_token_id)
    assert first_sep - 1 == 10  # [CLS] + 10 question tokens
    assert sum(o is not None for o in feature["offsets"]) == len(tokenizer.tokenize(example.context))


def test_build_features_rejects_bad_settings(tokenizer, sample):
    with pytest.raises(ValueError, match="leaves 37 context tokens .* doc_stride=40 must be smaller"):
        build_features(tokenizer, sample[:1], max_length=64, doc_stride=40, max_query_length=24, training=False)
    with pytest.raises(ValueError, match="max_length=1024 exceeds the model's 512"):
        build_features(tokenizer, sample[:1], max_length=1024, doc_stride=128, max_query_length=64, training=False)
    unanswered = QAExample("no-gold", "T", "Some context.", "What?", [])
    with pytest.raises(ValueError, match="first: 'no-gold'"):
        build_features(tokenizer, [unanswered], training=True, **WINDOW)

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="fast .* tokenizer"):
        build_features(SlowTokenizer(), sample[:1], training=False, **WINDOW)


# --- postprocess --------------------------------------------------------------------------------


def test_gold_positions_as_logits_give_back_the_gold_answers(sample, train_features):
    # An oracle model: put the logit spike on each window's labelled positions (padded logits, as
    # a batched model returns them). Windows without the answer vote for [CLS], which is never a
    # candidate, so the answer window wins.
    starts, ends = spikes(train_features, [(f["start_position"], f["end_position"]) for f in train_features], pad=5)
    predictions = postprocess(sample, train_features, starts, ends)
    assert set(predictions) == {e.id for e in sample}
    for example in sample:
        prediction = predictions[example.id]
        assert example.context[prediction["start"] : prediction["end"]] == prediction["text"]
        assert 0.0 < prediction["score"] <= 1.0
    scores = squad_scores({i: p["text"] for i, p in predictions.items()}, sample)
    assert scores["exact_match"] > 98.0 and scores["f1"] > 98.5  # < 100 only where answers cut word pieces


def test_postprocess_answers_a_question_built_on_the_fly(tokenizer):
    context = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."
    example = QAExample("live", "", context, "When was the Eiffel Tower completed?", [])
    features = build_features(tokenizer, [example], max_length=384, doc_stride=128, max_query_length=64, training=False)
    assert len(features) == 1 and "start_position" not in features[0]
    year = next(i for i, o in enumerate(features[0]["offsets"]) if o and context[o[0] : o[1]] == "1889")
    starts, ends = spikes(features, [(year, year)])
    prediction = postprocess([example], features, starts, ends)["live"]
    assert prediction["text"] == "1889"
    assert (prediction["start"], prediction["end"]) == (context.index("1889"), context.index("1889") + 4)


def window(offsets: list) -> dict:
    return {
        "input_ids": [0] * len(offsets),
        "token_type_ids": [0] * len(offsets),
        "example_index": 0,
        "offsets": offsets,
    }


def test_postprocess_keeps_only_valid_spans_and_scores_them_by_softmax():
    context = "alpha beta gamma delta"
    example = QAExample("q", "T", context, "?", [])
    # [CLS] q [SEP] alpha beta gamma delta [SEP]
    offsets = [None, None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]
    start = np.array([9.0, 9.0, 0.0, 1.0, 0.0, 3.0, 0.0, 9.0])  # question/specials score high but are not context
    end = np.array([9.0, 9.0, 0.0, 2.0, 0.0, 0.0, 0.0, 9.0])  # end before start (gamma..alpha) is invalid
    prediction = postprocess([example], [window(offsets)], [start], [end], n_best=2, max_answer_length=30)["q"]
    # Top-2 starts {gamma 3, alpha 1} x top-2 ends {alpha 2, beta 0}: valid are alpha..alpha (3), alpha..beta (1).
    assert prediction["text"] == "alpha" and (prediction["start"], prediction["end"]) == (0, 5)
    assert prediction["score"] == pytest.approx(np.exp(3) / (np.exp(3) + np.exp(1)))

    # A length limit of 1 token rules out the wide span, even with a better logit sum.
    start = np.array([0, 0, 0, 5.0, 0, 0, 0, 0])
    end = np.array([0, 0, 0, 0, 0, 0, 5.0, 0])
    assert (
        postprocess([example], [window(offsets)], [start], [end], max_answer_length=4)["q"]["text"]
        == "alpha beta gamma delta"
    )
    assert (
        postprocess([example], [window(offsets)], [start], [end], max_answer_length=1)["q"]["text"]
        != "alpha beta gamma delta"
    )


def test_postprocess_picks_the_best_window_and_counts_shared_spans_once():
    context = "one two three"
    example = QAExample("q", "T", context, "?", [])
    first = window([None, (0, 3), (4, 7), None])
    second = window([None, (4, 7), (8, 13), None])
    starts = [np.array([0, 2.0, 1.5, 0]), np.array([0, 1.0, 4.0, 0])]
    ends = [np.array([0, 2.0, 1.5, 0]), np.array([0, 1.0, 4.0, 0])]
    prediction = postprocess([example], [first, second], starts, ends, n_best=20)["q"]
    assert prediction["text"] == "three" and prediction["start"] == 8
    # Distinct spans: three(8) two..three(5) one(4) one..two(3.5) two(3: the better of 3 and 2, once).
    sums = np.array([8.0, 5.0, 4.0, 3.5, 3.0])
    assert prediction["score"] == pytest.approx(np.exp(8) / np.exp(sums).sum())


def test_postprocess_rejects_mismatched_inputs():
    example = QAExample("q", "T", "one two", "?", [])
    feature = window([None, (0, 3), (4, 7), None])
    with pytest.raises(ValueError, match="1 features but 2 start"):
        postprocess([example], [feature], [np.zeros(4)] * 2, [np.zeros(4)])
    with pytest.raises(ValueError, match="4 tokens but logits of length 3"):
        postprocess([example], [feature], [np.zeros(3)], [np.zeros(3)])
    with pytest.raises(ValueError, match="question 'other' has no features"):
        postprocess([example, QAExample("other", "T", "x", "?", [])], [feature], [np.zeros(4)], [np.zeros(4)])


def test_empty_context_yields_an_empty_answer(tokenizer):
    example = QAExample("empty", "T", "", "Anything?", [])
    features = build_features(tokenizer, [example], training=False, **WINDOW)
    starts, ends = spikes(features, [(0, 0)] * len(features))
    assert postprocess([example], features, starts, ends)["empty"] == {"text": "", "start": 0, "end": 0, "score": 0.0}


# --- official metrics ---------------------------------------------------------------------------


def test_normalize_answer_like_the_official_script():
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("24–10") == "24–10"  # the official script strips ASCII punctuation only


def test_squad_scores_by_hand():
    examples = [
        QAExample("a", "T", "c", "?", [("the big cat", 0)]),
        QAExample("b", "T", "c", "?", [("a cat sat", 0), ("on the mat", 0)]),
        QAExample("c", "T", "c", "?", [("Denver Broncos", 0)]),
        QAExample("d", "T", "c", "?", [("anything", 0)]),
    ]
    predictions = {
        "a": "Big cat.",  # EM 1, F1 1
        "b": "the cat on a mat",  # vs "cat sat": P 1/3 R 1/2 -> 0.4; vs "on mat": P 2/3 R 1 -> 0.8; EM 0
        "c": "Broncos",  # EM 0, F1 P 1 R 1/2 -> 2/3
        "ignored": "not a question",  # unknown ids do not count
    }  # "d" unanswered: 0 and 0
    assert answer_f1("the cat on a mat", "a cat sat") == pytest.approx(0.4)
    scores = squad_scores(predictions, examples)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 4)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3 + 0) / 4)
    assert scores["examples"] == 4 and scores["unanswered"] == 1


def test_gold_answers_score_100_on_the_dev_set(dev):
    scores = squad_scores({e.id: e.answers[0][0] for e in dev}, dev)
    assert scores["exact_match"] == 100.0 and scores["f1"] == 100.0
    wrong = squad_scores({e.id: "zzz" for e in dev}, dev)
    assert wrong["exact_match"] == 0.0 and wrong["f1"] == 0.0


def test_squad_scores_refuses_questions_without_gold():
    with pytest.raises(ValueError, match="first: 'x'"):
        squad_scores({"x": "a"}, [QAExample("x", "T", "c", "?", [])])
