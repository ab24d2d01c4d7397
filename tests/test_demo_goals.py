"""The federated demo's verdicts on its goals (`demos.federated.goals`), from tables whose
answers are known: the minimum over seeds of each row, and the stricter paired reading."""

from __future__ import annotations

import pytest

from demos.federated import goals, job_label

SECURE, PLAIN = job_label(True), job_label(False)


def _table(central, iid, alone, skewed, plain_offset=0.0) -> dict:
    rows = {("IID", "centralised"): central, ("IID", SECURE): iid,
            ("IID", PLAIN): [a + plain_offset for a in iid],
            ("label-skewed", "best hospital alone"): alone, ("label-skewed", SECURE): skewed,
            ("label-skewed", PLAIN): skewed}
    return {key: [{"auc": auc} for auc in aucs] for key, aucs in rows.items()}


def test_goals_are_read_on_the_minimum_of_each_row_and_stricter_seed_by_seed():
    found = goals(_table(central=[0.93, 0.92], iid=[0.92, 0.905], alone=[0.82, 0.88],
                         skewed=[0.90, 0.91]))
    points = [round(p, 6) for _, p, _ in found]
    met = [m for _, _, m in found]
    # minima: 0.92 - 0.905 = 1.5 below; 0.90 - 0.82 = 8 above; paired: worst 1.5 below,
    # worst gain 0.91 - 0.88 = 3 points; secure and plain identical
    assert points == [1.5, 1.5, 8.0, 3.0, 0.0]
    assert met == [True, True, True, False, True]


@pytest.mark.parametrize("offset, met", [(0.009, True), (0.011, False)])
def test_secure_and_plain_must_stay_within_one_point_on_every_seed(offset, met):
    (*_, (what, points, ok)) = goals(_table(central=[0.9], iid=[0.9], alone=[0.8],
                                            skewed=[0.9], plain_offset=offset))
    assert "secure vs plain" in what and ok is met and points == pytest.approx(100 * offset)
