import os
import random
from pathlib import Path

import numpy as np
import pytest

from bertops.tasks.ner.core import (
    ConllFormatError,
    Sentence,
    encode,
    entities,
    entity_scores,
    label_list,
    read_conll,
    spans_to_entities,
    split_words,
    validate_sentences,
    word_predictions,
    word_scores,
)

REPO = Path(__file__).resolve().parents[2]
CONLL = Path(os.environ.get("BERTOPS_DATASETS") or REPO.parent / "shared" / "datasets") / "conll2003"
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def write(tmp_path: Path, text: str, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from bertops.models.pretrained import load_tokenizer

    return load_tokenizer("packaged")


# --- reading -----------------------------------------------------------------------------------


def test_read_conll_sentences_tags_and_line_numbers(tmp_path):
    path = write(
        tmp_path,
        (
            "-DOCSTART- -X- -X- O\n"  # 1
            "\n"  # 2
            "EU NNP B-NP B-ORG\n"  # 3
            "rejects VBZ B-VP O\n"  # 4
            "\n\n"  # 5, 6: several blank lines make no empty sentence
            "Peter NNP B-NP B-PER\n"  # 7
            "Blackburn NNP I-NP I-PER\n"  # 8
            "-DOCSTART- -X- -X- O\n"  # 9: a document boundary without a blank line
            "BRUSSELS\tNNP\tB-NP\tB-LOC"  # 10: tabs, and no newline at the end of the file
        ),
    )
    sentences = read_conll(path)
    assert sentences == [
        Sentence(["EU", "rejects"], ["B-ORG", "O"], 3),
        Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
        Sentence(["BRUSSELS"], ["B-LOC"], 10),
    ]


def test_read_conll_two_columns_and_a_chosen_tag_column(tmp_path):
    assert read_conll(write(tmp_path, "Paris B-LOC\nis O\n")) == [Sentence(["Paris", "is"], ["B-LOC", "O"], 1)]
    four = write(tmp_path, "EU NNP B-NP B-ORG\n", "four.txt")
    assert read_conll(four, tag_column=2)[0].tags == ["B-NP"]
    with pytest.raises(ConllFormatError, match="tag_column=0 does not name a tag column"):
        read_conll(four, tag_column=0)
    with pytest.raises(ConllFormatError, match="tag_column=4"):
        read_conll(four, tag_column=4)


def test_malformed_row_names_file_line_content_and_column_counts(tmp_path):
    path = write(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-MISC\n")
    with pytest.raises(ConllFormatError) as caught:
        read_conll(path)
    message = str(caught.value)
    assert f"{path}:4:" in message
    assert "expected 4 columns" in message and "found 3" in message
    assert "'German JJ B-MISC'" in message


def test_malformed_row_content_is_truncated(tmp_path):
    path = write(tmp_path, "a O\n" + "b " * 200 + "O\n")
    with pytest.raises(ConllFormatError, match=r":2: expected 2 columns .* but found 201") as caught:
        read_conll(path)
    row = "b " * 200 + "O"
    assert repr(row[:57] + "...") in str(caught.value) and row not in str(caught.value)


def test_single_column_and_non_utf8_files_are_rejected(tmp_path):
    with pytest.raises(ConllFormatError, match=":2: 'Paris' has 1 column"):
        read_conll(write(tmp_path, "\nParis\n"))
    path = tmp_path / "latin1.txt"
    path.write_bytes("a O\n\nZürich B-LOC\n".encode("latin-1"))
    with pytest.raises(ConllFormatError, match=r"latin1.txt:3: not UTF-8"):
        read_conll(path)


def test_real_conll2003_counts_labels_and_clean_validation():
    if not CONLL.is_dir():
        pytest.skip(f"CoNLL-2003 not found at {CONLL}; set BERTOPS_DATASETS to the folder holding conll2003/")
    splits = {name: read_conll(CONLL / f"{name}.txt") for name in ("train", "valid", "test")}
    assert {name: len(s) for name, s in splits.items()} == {"train": 14041, "valid": 3250, "test": 3453}
    assert splits["train"][0] == Sentence(
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
        3,
    )
    assert label_list(splits["train"]) == LABELS
    for name, sentences in splits.items():
        assert validate_sentences(sentences, LABELS, name) == []


# --- validation --------------------------------------------------------------------------------


def test_unknown_tag_names_source_line_and_fix(tmp_path):
    sentences = read_conll(write(tmp_path, "EU B-ORG\n\nPeter B-PER\nBlackburn I-PERS\n"))
    problems = validate_sentences(sentences, LABELS, "train.txt")
    assert len(problems) == 1
    assert problems[0].startswith("train.txt:4: token 'Blackburn' tag 'I-PERS': unknown tag 'I-PERS'")
    assert "add it to the label list" in problems[0]


@pytest.mark.parametrize(
    "tags, line, follows",
    [
        (["I-PER", "I-PER"], 1, "the sentence start"),
        (["O", "I-PER"], 2, "'O'"),
        (["B-LOC", "I-PER"], 2, "'B-LOC'"),
        (["B-LOC", "I-LOC", "I-PER"], 3, "'I-LOC'"),
    ],
)
def test_inside_tag_without_begin_is_an_iob2_violation(tags, line, follows):
    sentence = Sentence([f"w{i}" for i in range(len(tags))], tags, 1)
    problems = validate_sentences([sentence], LABELS, "dev.txt")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"dev.txt:{line}: ")
    assert f"I-PER without a preceding B-PER (IOB2; it follows {follows})" in problems[0]
    assert "tag the first word of the entity B-PER" in problems[0]


def test_valid_iob2_has_no_problems():
    good = [Sentence(["a", "b", "c", "d", "e"], ["B-PER", "I-PER", "I-PER", "B-PER", "O"], 5)]
    assert validate_sentences(good, LABELS, "x") == []


def test_length_mismatch_empty_token_and_no_sentences():
    problems = validate_sentences(
        [Sentence(["a", "b"], ["O"], 7), Sentence(["a", " "], ["O", "B-LOC"], 10)], LABELS, "x.txt"
    )
    assert problems == [
        "x.txt:7: sentence has 2 tokens but 1 tags; give every token exactly one tag",
        "x.txt:11: token ' ' tag 'B-LOC': empty token; remove the row or give the token its text",
    ]
    assert validate_sentences([], LABELS, "x.txt") == ["x.txt: no sentences; the file has no token rows"]


def test_one_message_per_row_and_the_list_is_capped():
    # Row 1 has two problems (unknown tag and I- at the start): still one message.
    sentences = [Sentence(["t"], ["I-FOO"], line) for line in range(1, 26)]
    problems = validate_sentences(sentences, LABELS, "big.txt", max_problems=20)
    assert len(problems) == 21
    assert problems[0].startswith("big.txt:1: ") and "unknown tag 'I-FOO'" in problems[0]
    assert "I-FOO without a preceding B-FOO" in problems[0]
    assert problems[19].startswith("big.txt:20: ")
    assert problems[20] == "big.txt: ... and 5 more problems (first 20 shown)"


def test_label_list_is_sorted_complete_and_rejects_non_iob2():
    sentences = [Sentence(["a", "b"], ["B-PER", "O"], 1), Sentence(["c"], ["I-LOC"], 4)]
    assert label_list(sentences) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_list(list(reversed(sentences))) == label_list(sentences)
    with pytest.raises(ConllFormatError, match="line 5: tag 'E-PER' is not IOB2"):
        label_list([Sentence(["a", "b"], ["B-PER", "E-PER"], 4)])


# --- alignment to word pieces ------------------------------------------------------------------


def test_labels_sit_on_first_pieces_only(tokenizer):
    label2id = {label: i for i, label in enumerate(LABELS)}
    sentence = Sentence(["EU", "rejects", "Germanyyyxq", "call"], ["B-ORG", "O", "B-MISC", "O"], 1)
    [row] = encode(tokenizer, [sentence], label2id, max_length=32)
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]) == [
        "[CLS]",
        "eu",
        "rejects",
        "germany",
        "##y",
        "##yx",
        "##q",
        "call",
        "[SEP]",
    ]
    assert row["word_ids"] == [None, 0, 1, 2, 2, 2, 2, 3, None]
    assert row["labels"] == [-100, 5, 0, 3, -100, -100, -100, 0, -100]
    assert row["truncated"] is False


def test_truncation_flags_only_words_that_lost_their_label(tokenizer):
    label2id = {label: i for i, label in enumerate(LABELS)}
    sentence = Sentence(["EU", "rejects", "Germanyyyxq", "call"], ["B-ORG", "O", "B-MISC", "O"], 1)
    # 5 = [CLS] eu rejects germany [SEP]: "call" is cut and so has no label.
    [cut] = encode(tokenizer, [sentence], label2id, max_length=5)
    assert cut["word_ids"] == [None, 0, 1, 2, None] and cut["labels"] == [-100, 5, 0, 3, -100]
    assert cut["truncated"] is True
    # Only the tail pieces of the last word are cut: every word keeps its label.
    [tail] = encode(tokenizer, [Sentence(sentence.tokens[:3], sentence.tags[:3], 1)], label2id, max_length=5)
    assert tail["labels"] == [-100, 5, 0, 3, -100] and tail["truncated"] is False


def test_encode_rejects_unknown_tags_slow_tokenizers_and_tiny_lengths(tokenizer):
    label2id = {"O": 0}
    with pytest.raises(ValueError, match="line 8: tag 'B-PER' is not in label2id"):
        encode(tokenizer, [Sentence(["a", "Bob"], ["O", "B-PER"], 7)], label2id, max_length=16)

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="SlowTokenizer is a slow tokenizer"):
        encode(SlowTokenizer(), [], label2id, max_length=16)
    with pytest.raises(ValueError, match="max_length=2 leaves no room"):
        encode(tokenizer, [], label2id, max_length=2)


def test_word_predictions_from_ids_logits_padding_and_truncation():
    word_ids = [None, 0, 1, 1, 2, None]
    ids = [-100, 3, 7, 8, 0, -100]
    assert word_predictions(ids, word_ids) == [3, 7, 0]
    logits = np.zeros((8, 4))  # two extra rows: right padding in a batch
    for position, label in [(1, 2), (2, 1), (3, 3), (4, 0)]:
        logits[position, label] = 5.0
    assert word_predictions(logits, word_ids) == [2, 1, 0]
    # Words 3 and 4 were cut by truncation: they read as label 0 ("O") unless told otherwise.
    assert word_predictions(ids, word_ids, num_words=5) == [3, 7, 0, 0, 0]
    assert word_predictions(ids, word_ids, num_words=4, fill=-1) == [3, 7, 0, -1]
    with pytest.raises(ValueError, match="6 pieces"):
        word_predictions([1, 2], word_ids)


def test_word_scores_read_probability_at_first_piece():
    logits = np.log(np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]))
    ids, scores = word_scores(logits, [None, 0, 0, 1], num_words=3)
    assert ids == [1, 0, 0]
    assert scores == pytest.approx([0.8, 0.6, 0.0])


# --- entity metrics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        (["I-PER", "I-PER", "O"], [("PER", 0, 2)]),  # I- at the start opens an entity
        (["O", "I-LOC", "B-LOC"], [("LOC", 1, 2), ("LOC", 2, 3)]),  # I- after O opens; B- splits
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # type change mid-span
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),  # trailing entity at sentence end
        (["O", "O"], []),
        ([], []),
    ],
)
def test_entities_conlleval_reading(tags, expected):
    assert entities(tags) == expected


def test_entities_rejects_non_iob2_tags():
    with pytest.raises(ValueError, match="tag 'PER' at position 1 is not IOB2"):
        entities(["O", "PER"])


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "I-MISC"], ["B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC"], ["B-LOC", "B-LOC"]]
    # gold: PER LOC | ORG MISC | LOC = 5; pred: PER ORG | ORG MISC | LOC LOC = 6; right: PER ORG MISC.
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(6 / 11)
    assert scores["support"] == 5 and scores["predicted"] == 6
    assert scores["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
        "MISC": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }
    assert scores["macro_f1"] == pytest.approx((0 + 1 + 2 / 3 + 1) / 4)


def test_entity_scores_edge_cases():
    # A type only predicted gets a row with support 0; nothing right gives zeros, not NaN.
    scores = entity_scores([["O", "O"]], [["O", "B-PER"]])
    assert scores["per_type"] == {"PER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}}
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    # Entities never run across a sentence boundary.
    assert entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])["f1"] == 1.0
    assert entity_scores([], [])["f1"] == 0.0
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])


def _conlleval_chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """An independent oracle: conlleval's endOfChunk/startOfChunk rules (the ones seqeval ports),
    restricted to IOB2, scanned with a sentinel 'O' at the end; ends are inclusive there."""
    chunks, prev_tag, prev_type, begin = set(), "O", "", 0
    for i, chunk in enumerate(tags + ["O"]):
        tag, type_ = (chunk[0], chunk[2:]) if chunk != "O" else ("O", "")
        end = prev_tag in ("B", "I") and (tag in ("B", "O") or prev_type != type_)
        start = tag == "B" or (prev_tag == "O" and tag == "I") or (tag != "O" and prev_type != type_)
        if end:
            chunks.add((prev_type, begin, i))  # conlleval's inclusive end i - 1, made exclusive
        if start:
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def test_entities_and_scores_match_conlleval_rules_on_random_tags():
    rng = random.Random(13)
    tagset = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold = [[rng.choice(tagset) for _ in range(rng.randint(0, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tagset) for t in g] for g in gold]
    for tags in gold + pred:
        assert set(entities(tags)) == _conlleval_chunks(tags), tags
    gold_set = {(n, *c) for n, g in enumerate(gold) for c in _conlleval_chunks(g)}
    pred_set = {(n, *c) for n, p in enumerate(pred) for c in _conlleval_chunks(p)}
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(len(gold_set & pred_set) / len(pred_set))
    assert scores["recall"] == pytest.approx(len(gold_set & pred_set) / len(gold_set))
    assert sum(row["support"] for row in scores["per_type"].values()) == len(gold_set)


# --- serving helpers ---------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [word for word, _, _ in split_words(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("EU rejects German call.", ["EU", "rejects", "German", "call", "."]),
        ("The U.S. paid $1,000 (3.5%).", ["The", "U.S.", "paid", "$", "1,000", "(", "3.5", "%", ")", "."]),
        ("Germany's O'Brien don't", ["Germany", "'s", "O'Brien", "do", "n't"]),
        ("Mr. J. Smith of Acme Inc. said...", ["Mr.", "J.", "Smith", "of", "Acme", "Inc.", "said", "..."]),
        (
            'On 1996-08-22 S&P rose 1/2 -- "well-known"',
            ["On", "1996-08-22", "S&P", "rose", "1/2", "--", '"', "well-known", '"'],
        ),
        ("Paris,France won 6-4 in US$ .500", ["Paris", ",", "France", "won", "6-4", "in", "US$", ".500"]),
        ("Zürich’s  team", ["Zürich", "’s", "team"]),
        ("", []),
    ],
)
def test_split_words_follows_conll_tokenization(text, expected):
    assert _words(text) == expected


def test_split_words_offsets_point_into_the_text():
    text = "  Germany's   U.S. envoy,\tdon't\n"
    for word, start, end in split_words(text):
        assert text[start:end] == word
    assert split_words("a b.") == [("a", 0, 1), ("b", 2, 3), (".", 3, 4)]


def test_spans_to_entities_offsets_text_and_mean_score():
    text = "Peter Blackburn visited the U.S. embassy in Brussels."
    words = split_words(text)
    assert [w for w, _, _ in words] == [
        "Peter",
        "Blackburn",
        "visited",
        "the",
        "U.S.",
        "embassy",
        "in",
        "Brussels",
        ".",
    ]
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "B-LOC", "O"]
    scores = [0.9, 0.7, 1.0, 1.0, 0.6, 1.0, 1.0, 0.95, 1.0]
    found = spans_to_entities(text, words, tags, scores)
    assert found == [
        {"entity": "PER", "text": "Peter Blackburn", "start": 0, "end": 15, "score": pytest.approx(0.8)},
        {"entity": "LOC", "text": "U.S.", "start": 28, "end": 32, "score": pytest.approx(0.6)},
        {"entity": "LOC", "text": "Brussels", "start": 44, "end": 52, "score": pytest.approx(0.95)},
    ]
    # Without scores the entities are the same and the score says "unknown", not a made-up number.
    assert [e["score"] for e in spans_to_entities(text, words, tags)] == [None, None, None]
    # The span keeps the original spacing between words.
    spaced = "Peter   Blackburn"
    assert spans_to_entities(spaced, split_words(spaced), ["B-PER", "I-PER"])[0]["text"] == spaced


def test_spans_to_entities_rejects_mismatched_inputs():
    words = split_words("Paris rocks")
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        spans_to_entities("Paris rocks", words, ["B-LOC"])
    with pytest.raises(ValueError, match="2 words but 3 scores"):
        spans_to_entities("Paris rocks", words, ["B-LOC", "O"], [0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match="fall outside the text"):
        spans_to_entities("Par", words, ["O", "B-LOC"])
