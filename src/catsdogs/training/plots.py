"""Report figures and text (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    pred = probs.argmax(1)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    plt = _pyplot()
    cm = confusion(probs, labels, len(classes))
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(cm, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} confusion matrix (n={len(labels)})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def learning_curves(history: list[dict[str, float]], path: Path) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax1.set_title("loss")
    ax2.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], label="val")
    ax2.set_title("accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def roc_curve(probs: np.ndarray, labels: np.ndarray, path: Path) -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    plt = _pyplot()
    fpr, tpr, _ = sk_roc(labels, probs[:, 1])
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(labels, probs[:, 1]):.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (positive class: dog)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def classification_report_text(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> str:
    from sklearn.metrics import classification_report

    return classification_report(labels, probs.argmax(1), target_names=list(classes), digits=4)
