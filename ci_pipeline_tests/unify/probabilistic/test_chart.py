"""Text charts of match weights: bars per level and a pair's waterfall."""

from __future__ import annotations

from ci_pipeline.unify.probabilistic.chart import AXIS, FALL, RISE, waterfall_figure, weight_bars


def test_weight_bars_put_evidence_against_left_of_one_axis_and_scale_to_the_largest():
    lines = weight_bars([("first_name exact", 8.0), ("first_name else", -4.0), ("city null", 0.0)], width=10)
    assert len({line.index(AXIS) for line in lines}) == 1, "one axis for every line"
    exact, other, null = (line.split(AXIS) for line in lines)
    assert exact[1].count(RISE) == 10 and exact[0].count(RISE) == 0 and exact[1].endswith("+8.00")
    assert other[0].count(RISE) == 5 and other[1].count(RISE) == 0 and other[1].endswith("-4.00")
    assert RISE not in "".join(null)


def test_a_waterfall_runs_from_the_prior_through_each_step_to_the_total():
    lines = waterfall_figure([("prior", -16.0), ("name exact", 12.0), ("birth date else", -4.0), ("email exact", 16.0)])
    assert [line.split()[0] for line in lines] == ["prior", "name", "birth", "email", "total"]
    assert [float(line.split()[-1]) for line in lines] == [-16.0, -4.0, -8.0, 8.0, 8.0]
    # A rise is drawn solid from left to right, a fall light from right to left; each step starts where the last
    # one ended, and the total is drawn from 0, where the prior started.
    marks = [FALL, RISE, FALL, RISE]
    assert all(mark in line for line, mark in zip(lines, marks, strict=False))
    spans = []
    for line, mark in zip(lines, marks, strict=False):
        first, last = line.find(mark), line.rfind(mark)
        spans.append((first, last) if mark == RISE else (last, first))
    assert all(spans[i][1] == spans[i + 1][0] for i in range(3))
    total = lines[-1]
    assert (total.find(RISE), total.rfind(RISE)) == (spans[0][0], spans[3][1])
