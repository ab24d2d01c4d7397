"""The pixel baseline: what a logistic regression on raw pixels reaches.

The synthetic task is fair when this stays clearly below the CNN.
"""

from __future__ import annotations

import numpy as np


def pixel_logistic_regression(train, test, seed: int = 0) -> dict:
    """Accuracy and AUC of a logistic regression on standardised raw pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train = train.images.reshape(len(train.images), -1).astype(np.float32) / 255.0
    x_test = test.images.reshape(len(test.images), -1).astype(np.float32) / 255.0
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1,
                                                               random_state=seed))
    model.fit(x_train, train.labels)
    scores = model.predict_proba(x_test)[:, 1]
    return {"accuracy": float(np.mean((scores >= 0.5) == test.labels)),
            "auc": float(roc_auc_score(test.labels, scores))}
