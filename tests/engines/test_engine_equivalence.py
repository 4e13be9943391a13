"""The same experiment and seed on the three engines gives the same result.

Stated tolerance: the final pooled test metrics agree within 1e-4 (absolute)
across ``inprocess``, ``ray`` and ``deployment``. In practice they are
bitwise equal: the same rows, seeds and TensorFlow ops run in every engine,
and the ServerApp hands replies to the strategy sorted by region whichever
order they arrived in, so even the float sums are taken in the same order.
"""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4


@pytest.mark.parametrize("metric", ["r2", "loss", "mae", "rmse"])
def test_final_metric_agrees_across_the_three_engines(
    metric, inprocess_run, ray_run, deployment_run
):
    inprocess = inprocess_run.final(metric)
    ray = ray_run["result"].final(metric)
    deployment = deployment_run["result"].final(metric)
    assert ray == pytest.approx(inprocess, abs=TOLERANCE)
    assert deployment == pytest.approx(inprocess, abs=TOLERANCE)


def test_histories_match_row_for_row(inprocess_run, ray_run, deployment_run):
    expected = inprocess_run.history
    for other in (ray_run["result"].history, deployment_run["result"].history):
        pd.testing.assert_frame_equal(other, expected, atol=TOLERANCE, rtol=0)
