"""Multinomial logistic regression trained with softmax_ext.linear_cross_entropy.

The data set is scikit-learn's bundled 8x8 digits (1797 images, 10 classes,
shipped inside the package: nothing is downloaded). The model is z = x W^T + b
with softmax cross-entropy, trained by plain mini-batch SGD: every step takes
(loss, (dx, dW, db)) from one fused call, never holding the full logits.

    pip install "softmax_ext[examples]"   # scikit-learn, for the data set
    python examples/softmax_regression.py [--epochs 30] [--lr 0.5]
"""

from __future__ import annotations

import argparse

import numpy as np

import softmax_ext as sx


def load_digits_split(seed: int = 0, test_fraction: float = 0.2):
    """Standardised train/test arrays from scikit-learn's bundled digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "this example reads scikit-learn's bundled digits data set: install it with "
            "`pip install \"softmax_ext[examples]\"` (or `pip install scikit-learn`)"
        ) from error

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    X, y = digits.data[order], digits.target[order]
    n_test = int(len(y) * test_fraction)
    X_train, X_test, y_train, y_test = X[n_test:], X[:n_test], y[n_test:], y[:n_test]
    mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-8
    return (X_train - mean) / std, (X_test - mean) / std, y_train, y_test


def train(epochs: int = 30, batch_size: int = 64, lr: float = 0.5, l2: float = 1e-4, seed: int = 0,
          verbose: bool = True):
    """Returns (training loss after each epoch, test accuracy)."""
    X_train, X_test, y_train, y_test = load_digits_split(seed)
    n_classes, n_features = 10, X_train.shape[1]
    W = np.zeros((n_classes, n_features))
    b = np.zeros(n_classes)
    rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            _, (_, dW, db) = sx.linear_cross_entropy(X_train[batch], W, y_train[batch], b)
            W -= lr * (dW + l2 * W)
            b -= lr * db
        losses.append(float(sx.linear_cross_entropy(X_train, W, y_train, b, return_grad=False)))
        if verbose:
            print(f"epoch {epoch + 1:3d}  training loss {losses[-1]:.4f}")
    accuracy = float(np.mean(np.argmax(X_test @ W.T + b, axis=1) == y_test))
    if verbose:
        print(f"test accuracy {accuracy:.3f} on {len(y_test)} held-out digits")
    return losses, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()
    train(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)


if __name__ == "__main__":
    main()
