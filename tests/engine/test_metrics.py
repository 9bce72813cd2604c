"""Metrics against hand-computed values, and the PNG figures read back with Pillow."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from sifa.engine.metrics import (
    classification_report,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    plot_confusion_matrix,
    plot_training_curves,
    topk_accuracy,
)

# 4 videos, 3 classes; the label's rank (0 = best) is written next to each row
SCORES = [
    [0.1, 0.7, 0.2],  # label 1: rank 0
    [0.5, 0.3, 0.2],  # label 2: rank 2
    [0.4, 0.4, 0.2],  # label 1: tied with class 0, which wins as the lower index: rank 1
    [0.2, 0.3, 0.3],  # label 1: tied with class 2, and wins as the lower index: rank 0
]
LABELS = [1, 2, 1, 1]


def assert_png(path, min_side=200, max_side=4000):
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.load()  # decodes the whole file: a truncated one fails here
    assert min_side <= width <= max_side and min_side <= height <= max_side
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no temporary left


def test_topk_accuracy_hand_example():
    accuracy = topk_accuracy(np.array(SCORES), np.array(LABELS), ks=(1, 2, 3, 5))
    assert accuracy == {1: 2 / 4, 2: 3 / 4, 3: 1.0, 5: 1.0}  # k = 5 > 3 classes counts as 3


def test_topk_accuracy_takes_tensors_and_defaults_to_top1_top5():
    accuracy = topk_accuracy(torch.tensor(SCORES, requires_grad=True), torch.tensor(LABELS))
    assert accuracy == {1: 0.5, 5: 1.0}


def test_topk_accuracy_ties_go_to_the_lower_index():
    # all scores equal: the order is 0, 1, 2, ..., so only class 0 is in the top 1
    scores = np.zeros((4, 6))
    labels = np.array([0, 1, 2, 5])
    assert topk_accuracy(scores, labels, ks=(1, 2, 3, 6)) == {1: 0.25, 2: 0.5, 3: 0.75, 6: 1.0}


def test_topk_accuracy_against_a_loop_on_random_scores():
    generator = np.random.default_rng(0)
    scores = generator.integers(0, 4, size=(200, 7)).astype(np.float32)  # many ties
    labels = generator.integers(0, 7, size=200)
    for k in (1, 3, 5):
        hits = 0
        for row, label in zip(scores, labels, strict=True):
            # ranked first by higher score, then by lower index
            ranked = sorted(range(7), key=lambda c, row=row: (-row[c], c))
            hits += label in ranked[:k]
        assert topk_accuracy(scores, labels, ks=(k,))[k] == hits / 200


def test_confusion_matrix_rows_are_true_columns_predicted():
    labels = [0, 0, 1, 2, 2, 2]
    predictions = [0, 1, 1, 0, 2, 2]
    expected = [
        [1, 1, 0],  # true 0: once right, once taken for 1
        [0, 1, 0],
        [1, 0, 2],  # true 2: once taken for 0
    ]
    confusion = confusion_matrix(torch.tensor(predictions), np.array(labels), 3)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, expected)


def test_per_class_and_mean_class_accuracy_skip_a_class_without_videos():
    confusion = np.array([
        [2, 1, 0, 0],
        [0, 0, 0, 0],  # no videos of class 1
        [1, 0, 3, 0],
        [0, 0, 0, 1],
    ])  # fmt: skip
    accuracy = per_class_accuracy(confusion)
    assert accuracy.shape == (4,)
    assert math.isnan(accuracy[1])
    np.testing.assert_allclose(accuracy[[0, 2, 3]], [2 / 3, 3 / 4, 1.0])
    assert mean_class_accuracy(confusion) == pytest.approx((2 / 3 + 3 / 4 + 1) / 3)


def test_mean_class_accuracy_of_no_videos_is_an_error():
    with pytest.raises(ValueError, match="no videos"):
        mean_class_accuracy(np.zeros((3, 3), dtype=np.int64))


def test_classification_report_contents_and_json():
    scores = torch.tensor([
        [0.9, 0.05, 0.05],  # label 0, predicted 0
        [0.2, 0.7, 0.1],  # label 0, predicted 1
        [0.1, 0.8, 0.1],  # label 1, predicted 1
        [0.6, 0.3, 0.1],  # label 1, predicted 0
        [0.3, 0.3, 0.4],  # label 0, predicted 2
    ])  # fmt: skip
    labels = torch.tensor([0, 0, 1, 1, 0])
    report = classification_report(scores, labels, ["a", "b", "c"])
    assert report == {
        "num_videos": 5,
        "top1": pytest.approx(2 / 5),
        "top5": 1.0,  # 3 classes only
        "mean_class_accuracy": pytest.approx((1 / 3 + 1 / 2) / 2),
        "per_class_accuracy": {"a": pytest.approx(1 / 3), "b": 0.5, "c": None},
        "confusion_matrix": [[1, 1, 1], [1, 1, 0], [0, 0, 0]],
    }
    assert type(report["top1"]) is float and type(report["num_videos"]) is int
    assert type(report["confusion_matrix"][0][0]) is int
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: topk_accuracy(np.zeros(5), np.zeros(5, int)), r"scores.*\(N, C\).*\(5,\)"),
        (lambda: topk_accuracy(np.zeros((4, 3)), np.zeros(3, int)), r"labels.*\(4,\).*\(3,\)"),
        (lambda: topk_accuracy(np.zeros((0, 3)), np.zeros(0, int)), r"scores.*empty"),
        (lambda: topk_accuracy(np.zeros((2, 3)), [0, 3]), r"labels.*\[0, 3\)"),
        (lambda: topk_accuracy(np.zeros((2, 3)), [0.0, 1.0]), r"labels.*integer"),
        (lambda: topk_accuracy(np.zeros((2, 3)), [0, 1], ks=(0,)), r"ks"),
        (lambda: confusion_matrix([0, 1], [0, 1, 1], 2), r"predictions.*\(3,\).*\(2,\)"),
        (lambda: confusion_matrix([0, 1], [[0, 1]], 2), r"labels.*\(N,\).*\(1, 2\)"),
        (lambda: per_class_accuracy(np.zeros((2, 3))), r"confusion.*\(C, C\).*\(2, 3\)"),
        (
            lambda: classification_report(np.zeros((2, 3)), [0, 1], ["a", "b"]),
            r"class_names.*\(3,\).*\(2,\)",
        ),
        (
            lambda: plot_confusion_matrix(np.eye(3), ["a", "b"], "unused.png"),
            r"class_names.*\(3,\).*\(2,\)",
        ),
    ],
)
def test_bad_shapes_name_the_argument(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_confusion_png_hand_example(tmp_path, drawn_figures):
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    path = tmp_path / "new" / "nested" / "confusion.png"
    returned = plot_confusion_matrix(confusion, ["cat", "dog", "eel"], path, title="val")
    assert returned == path
    assert_png(path)

    axes, _colour_bar = drawn_figures[0].axes
    assert [label.get_text() for label in axes.get_xticklabels()] == ["cat", "dog", "eel"]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["cat", "dog", "eel"]
    assert axes.get_xlabel() == "predicted class" and axes.get_ylabel() == "true class"
    assert axes.get_title() == "val"
    shown = axes.images[0].get_array()
    np.testing.assert_allclose(shown[0], [0.75, 0.25, 0.0])  # rows normalised
    np.testing.assert_allclose(shown[2], [0.5, 0.0, 0.5])
    assert np.ma.getmaskarray(shown)[1].all() or np.isnan(np.ma.getdata(shown)[1]).all()
    cells = {(text.get_position(), text.get_text()) for text in axes.texts}
    assert ((1, 0), "0.25") in cells and ((0, 2), "0.50") in cells  # (x = predicted, y = true)
    assert len(cells) == 6  # the row without videos is left blank


def test_confusion_png_counts_without_normalising(tmp_path, drawn_figures):
    confusion = np.array([[3, 1], [0, 7]])
    plot_confusion_matrix(confusion, ["a", "b"], tmp_path / "counts.png", normalize=False)
    axes = drawn_figures[0].axes[0]
    np.testing.assert_array_equal(axes.images[0].get_array(), [[3, 1], [0, 7]])
    assert sorted(text.get_text() for text in axes.texts) == ["0", "1", "3", "7"]


def test_confusion_png_20_classes_has_names_but_no_cell_values(tmp_path, drawn_figures):
    names = [f"class {index}" for index in range(20)]
    plot_confusion_matrix(np.eye(20, dtype=int) * 4, names, tmp_path / "c20.png")
    axes = drawn_figures[0].axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == names
    assert len(axes.texts) == 0


def test_confusion_png_400_classes_has_no_tick_labels_and_is_fast(tmp_path, drawn_figures):
    generator = np.random.default_rng(0)
    confusion = generator.integers(0, 5, size=(400, 400)) + np.diag(np.full(400, 40))
    names = [f"kinetics class {index}" for index in range(400)]
    path = tmp_path / "k400.png"
    start = time.perf_counter()
    plot_confusion_matrix(confusion, names, path)
    assert time.perf_counter() - start < 5.0
    assert_png(path, max_side=1500)
    axes = drawn_figures[0].axes[0]
    assert list(axes.get_xticks()) == [] and list(axes.get_yticks()) == []
    assert len(axes.texts) == 0


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "confusion.png"
    path.write_bytes(b"old")

    def broken_savefig(self, file, **kwargs):
        file.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_confusion_matrix(np.eye(2), ["a", "b"], path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["confusion.png"]


def history(epochs, loss_start, top1_start, with_val=True):
    records = []
    for epoch in range(1, epochs + 1):
        record = {"epoch": epoch, "train_loss": loss_start / epoch, "lr": 0.1 / epoch}
        if with_val:
            record["val_top1"] = top1_start + 0.05 * epoch
        records.append(record)
    return records


def test_training_curves_three_runs(tmp_path, drawn_figures):
    histories = {
        "c2d_resnet18": history(5, 4.0, 0.30),
        "sifa_resnet18": history(5, 3.5, 0.40),
        "no_validation": history(5, 5.0, 0.0, with_val=False),
    }
    path = tmp_path / "plots" / "curves.png"
    assert plot_training_curves(histories, path, title="Kinetics-400") == path
    assert_png(path)

    loss_axes, top1_axes = drawn_figures[0].axes
    assert [line.get_label() for line in loss_axes.lines] == list(histories)
    assert [line.get_label() for line in top1_axes.lines] == ["c2d_resnet18", "sifa_resnet18"]
    np.testing.assert_allclose(
        loss_axes.lines[1].get_ydata(), [3.5, 3.5 / 2, 3.5 / 3, 3.5 / 4, 0.7]
    )
    np.testing.assert_allclose(top1_axes.lines[1].get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(top1_axes.lines[1].get_ydata(), [45, 50, 55, 60, 65])  # in %
    assert loss_axes.get_legend() is not None and top1_axes.get_legend() is not None
    # a run has the same colour in both panels
    assert loss_axes.lines[1].get_color() == top1_axes.lines[1].get_color()
    assert loss_axes.lines[0].get_color() != loss_axes.lines[1].get_color()


def test_training_curves_leave_out_an_empty_panel(tmp_path, drawn_figures):
    histories = {"run": [{"epoch": 2, "val_top1": 0.5}, {"epoch": 1, "val_top1": 0.25}]}
    plot_training_curves(histories, tmp_path / "val_only.png")
    (axes,) = drawn_figures[0].axes
    assert axes.get_title() == "Validation top-1"
    np.testing.assert_allclose(axes.lines[0].get_xdata(), [1, 2])  # sorted by epoch
    np.testing.assert_allclose(axes.lines[0].get_ydata(), [25, 50])


@pytest.mark.parametrize("histories", [{}, {"run": []}, {"run": [{"epoch": 1, "lr": 0.1}]}])
def test_training_curves_with_nothing_to_draw(tmp_path, histories):
    with pytest.raises(ValueError, match="nothing to draw"):
        plot_training_curves(histories, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_import_is_light_and_drawing_leaves_pyplot_alone(tmp_path):
    script = f"""
import sys
import sifa.engine.metrics as metrics
assert "matplotlib" not in sys.modules
metrics.plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], {str(tmp_path / "c.png")!r})
metrics.plot_training_curves({{"r": [{{"epoch": 1, "train_loss": 1.0}}]}},
                             {str(tmp_path / "t.png")!r})
assert "matplotlib" in sys.modules and "matplotlib.pyplot" not in sys.modules
"""
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    assert sorted(os.listdir(tmp_path)) == ["c.png", "t.png"]
