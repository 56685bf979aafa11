import numpy as np
import pytest

from bertops.evaluation.metrics import classification_metrics, confusion_matrix, expected_calibration_error, per_class


def test_confusion_and_per_class_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 2, 2])
    matrix = confusion_matrix(y_true, y_pred, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    classes = per_class(matrix)
    assert classes[0] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert classes[1]["precision"] == 0.5 and classes[1]["recall"] == 0.5
    assert classes[2]["f1"] == pytest.approx(2 / 3)


def test_class_never_predicted_has_zero_precision_not_nan():
    classes = per_class(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2))
    assert classes[1] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_ece_of_perfectly_calibrated_and_overconfident_models():
    # 10 predictions at confidence 0.8, 8 of them right: calibrated, ECE 0.
    probs = np.array([[0.8, 0.2]] * 10)
    y = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(0.0)
    # Confidence 0.99 but only half right: ECE = |0.5 - 0.99|.
    probs = np.array([[0.99, 0.01]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 1, 1]), bins=15) == pytest.approx(0.49)


def test_classification_metrics_from_logits():
    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    report = classification_metrics(logits, np.array([0, 1, 1, 1]), ["neg", "pos"], ece_bins=10)
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 0], [1, 2]]
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert set(report["per_class"]) == {"neg", "pos"} and report["examples"] == 4
