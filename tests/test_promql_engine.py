"""PromQL engine tests as data-driven scripts (load / eval / clear) over an in-memory
store. Expected values follow Prometheus 2.42, whose semantics the differential suite
(``test_promql_prometheus.py``) checks against a real Prometheus; here each case is
small enough to be worked out by hand."""

from __future__ import annotations

import pytest

from promstore.promql.testing import ScriptError, run_script

STALENESS = """
load 10s
    metric 0 1 stale 2

eval instant at 10s metric
    metric 1

# a stale marker hides the older samples
eval instant at 20s metric

eval instant at 30s metric
    metric 2

# the lookback delta includes its start: the sample at 30s is seen at 330s, not 331s
eval instant at 330s metric
    metric 2

eval instant at 331s metric

eval range from 0 to 40s step 10s metric
    metric 0 1 _ 2 2

# ranges skip stale markers and include both ends
eval instant at 30s count_over_time(metric[1m])
    {} 3

eval instant at 20s count_over_time(metric[10s])
    {} 1

eval instant at 20s count_over_time(metric[1s])

eval instant at 40s last_over_time(metric[15s])
    metric 2
"""

RATES = """
load 1m
    counter 0+10x10
    reset 0 10 20 5 15
    gauge 10 5 20
    sparse 5 15 25

# window [5m, 10m] holds both ends: no extrapolation
eval instant at 10m increase(counter[5m])
    {} 50

eval instant at 10m rate(counter[5m])
    {} 0.16666666666666666

# window [5m30s, 10m30s]: 60..100 over 4m, extrapolated by 30s on each side
eval instant at 10m30s increase(counter[5m])
    {} 50

eval instant at 4m increase(reset[4m])
    {} 35

eval instant at 4m irate(reset[4m])
    {} 0.16666666666666666

eval instant at 4m idelta(reset[4m])
    {} 10

eval instant at 4m resets(reset[4m])
    {} 1

eval instant at 4m changes(reset[4m])
    {} 4

eval instant at 2m delta(gauge[2m])
    {} 10

# 15 and 25 over one minute, 30s short of the start, 90s short of the end
eval instant at 3m30s increase(sparse[3m])
    {} 20

eval instant at 10m deriv(counter[5m])
    {} 0.16666666666666666

eval instant at 10m predict_linear(counter[5m], 60)
    {} 110

# one sample is not enough for a rate
eval instant at 10m rate(counter[30s])

eval instant at 2m avg_over_time(gauge[2m])
    {} 11.666666666666666

eval instant at 2m stddev_over_time(gauge[2m])
    {} 6.236095644623236

eval instant at 2m quantile_over_time(0.5, gauge[2m])
    {} 10

eval instant at 2m holt_winters(gauge[2m], 0.5, 0.5)
    {} 10
"""

AGGREGATIONS = """
load 5m
    http_requests{job="api", instance="0", group="production"} 0+10x10
    http_requests{job="api", instance="1", group="production"} 0+20x10
    http_requests{job="api", instance="0", group="canary"}     0+30x10
    http_requests{job="api", instance="1", group="canary"}     0+40x10
    http_requests{job="app", instance="0", group="production"} 0+50x10
    http_requests{job="app", instance="1", group="production"} 0+60x10

eval instant at 50m sum by (group) (http_requests)
    {group="production"} 1400
    {group="canary"} 700

eval instant at 50m sum without (instance) (http_requests)
    {job="api", group="production"} 300
    {job="api", group="canary"} 700
    {job="app", group="production"} 1100

eval instant at 50m avg(http_requests)
    {} 350

eval instant at 50m count by (job) (http_requests)
    {job="api"} 4
    {job="app"} 2

eval instant at 50m min by (job) (http_requests)
    {job="api"} 100
    {job="app"} 500

eval instant at 50m max(http_requests)
    {} 600

eval instant at 50m group by (job) (http_requests)
    {job="api"} 1
    {job="app"} 1

eval instant at 50m stddev by (job) (http_requests)
    {job="api"} 111.80339887498948
    {job="app"} 50

eval instant at 50m stdvar by (job) (http_requests)
    {job="api"} 12500
    {job="app"} 2500

eval_ordered instant at 50m topk(2, http_requests)
    http_requests{job="app", instance="1", group="production"} 600
    http_requests{job="app", instance="0", group="production"} 500

eval_ordered instant at 50m bottomk by (job) (1, http_requests)
    http_requests{job="api", instance="0", group="production"} 100
    http_requests{job="app", instance="0", group="production"} 500

eval instant at 50m quantile(0.5, http_requests)
    {} 350

eval instant at 50m quantile by (job) (0.25, http_requests)
    {job="api"} 175
    {job="app"} 525

eval instant at 50m count_values("value", http_requests{job="app"})
    {value="500"} 1
    {value="600"} 1

eval instant at 50m count_values without (instance) ("instance", http_requests{job="app"})
    {job="app", group="production"} 2

eval range from 0 to 10m step 5m sum(http_requests{job="app"})
    {} 0 110 220

eval_fail instant at 50m topk(1e30, http_requests)
"""

BINARY = """
load 5m
    a{x="1", y="a"} 1
    a{x="2", y="b"} 2
    b{x="1", z="p"} 10
    b{x="2", z="q"} 20
    c{x="1", v="one"} 100
    d{x="1"} 5
    d{x="1", w="other"} 6
    e{x="1"} 7

eval instant at 0m a + on(x) b
    {x="1"} 11
    {x="2"} 22

eval instant at 0m a * ignoring(y, z) b
    {x="1"} 10
    {x="2"} 40

eval instant at 0m a > 1
    a{x="2", y="b"} 2

eval instant at 0m 1 < a
    a{x="2", y="b"} 2

eval instant at 0m a > bool 1
    {x="1", y="a"} 0
    {x="2", y="b"} 1

eval instant at 0m a + on(x) group_left(v) c
    {x="1", y="a", v="one"} 101

eval instant at 0m c - on(x) group_right(v) a
    {x="1", y="a", v="one"} 99

eval instant at 0m a and on(x) c
    a{x="1", y="a"} 1

eval instant at 0m a unless on(x) c
    a{x="2", y="b"} 2

eval instant at 0m a or on(x) c
    a{x="1", y="a"} 1
    a{x="2", y="b"} 2

eval instant at 0m c or on(x) a
    c{x="1", v="one"} 100
    a{x="2", y="b"} 2

eval instant at 0m 2 ^ 3 ^ 2
    512

eval instant at 0m -a
    {x="1", y="a"} -1
    {x="2", y="b"} -2

eval instant at 0m a % 2
    {x="1", y="a"} 1
    {x="2", y="b"} 0

# two series on the right for x="1"
eval_fail instant at 0m a + on(x) d

# two series on the left match one on the right
eval_fail instant at 0m d + on(x) c

# results that only differ by name collide
eval_fail instant at 0m {__name__=~"d|e"} * 1
"""

SUBQUERIES = """
load 10s
    metric 0+1x1000

# steps 970, 980, 990, 1000: aligned to the step, both window ends included
eval instant at 1000s sum_over_time(metric[30s:10s])
    {} 394

eval instant at 1010s sum_over_time(metric[30s:10s] offset 9s)
    {} 297

eval instant at 1000s sum_over_time(metric[30s:10s] offset -1s)
    {} 297

eval instant at 1000s rate(sum_over_time(metric[30s:10s])[50s:10s])
    {} 0.4

eval instant at 1000s metric[20s:10s]
    metric 98 99 100

eval instant at 1000s max_over_time(metric[30s:10s] @ 500)
    {} 50
"""

AT_MODIFIER = """
load 10s
    metric{job="1"} 0+1x100
    metric{job="2"} 0+2x100

eval instant at 1000s metric @ 100
    metric{job="1"} 10
    metric{job="2"} 20

eval range from 0 to 20s step 10s metric{job="1"} @ 100
    metric{job="1"} 10 10 10

eval range from 10s to 30s step 10s metric{job="1"} @ start()
    metric{job="1"} 1 1 1

eval range from 10s to 30s step 10s metric{job="1"} @ end()
    metric{job="1"} 3 3 3

eval instant at 50s rate(metric{job="1"}[20s] @ 100)
    {job="1"} 0.1

eval instant at 100s metric{job="1"} @ 50 offset 20s
    metric{job="1"} 3

eval instant at 1000s timestamp(metric{job="1"} @ 100)
    {job="1"} 100
"""

FUNCTIONS = """
load 5m
    up{job="api", instance="a:1"} 1
    up{job="api", instance="b:2"} 0
    temp{room="x"} -2.5
    bucket{le="0.1"} 10
    bucket{le="1"} 20
    bucket{le="+Inf"} 20

eval instant at 0m label_replace(up, "host", "$1", "instance", "(.*):.*")
    up{job="api", instance="a:1", host="a"} 1
    up{job="api", instance="b:2", host="b"} 0

eval instant at 0m label_replace(up, "host", "$1x", "instance", "(.*):.*")
    up{job="api", instance="a:1"} 1
    up{job="api", instance="b:2"} 0

eval instant at 0m label_join(up, "both", "/", "job", "instance")
    up{job="api", instance="a:1", both="api/a:1"} 1
    up{job="api", instance="b:2", both="api/b:2"} 0

eval_fail instant at 0m label_replace(up, "1bad", "", "instance", ".*")

eval instant at 0m abs(temp)
    {room="x"} 2.5

eval instant at 0m round(temp)
    {room="x"} -2

eval instant at 0m clamp(temp, -1, 1)
    {room="x"} -1

eval instant at 0m clamp_min(temp, 0)
    {room="x"} 0

eval instant at 0m sgn(temp)
    {room="x"} -1

eval instant at 0m histogram_quantile(0.5, bucket)
    {} 0.1

eval instant at 0m histogram_quantile(0.75, bucket)
    {} 0.55

eval instant at 0m absent(nonexistent{job="x", a=~"b"})
    {job="x"} 1

eval instant at 0m absent(up)

eval instant at 0m absent_over_time(nonexistent{job="y"}[5m])
    {job="y"} 1

eval_ordered instant at 0m sort_desc(up)
    up{job="api", instance="a:1"} 1
    up{job="api", instance="b:2"} 0

eval_ordered instant at 0m sort(up)
    up{job="api", instance="b:2"} 0
    up{job="api", instance="a:1"} 1

eval instant at 0m scalar(temp)
    -2.5

eval instant at 0m scalar(up)
    NaN

eval instant at 0m year(vector(1700000000))
    {} 2023

eval instant at 0m day_of_week(vector(0))
    {} 4

eval instant at 0m days_in_month(vector(951782400))
    {} 29

eval instant at 4m timestamp(temp)
    {room="x"} 0

eval instant at 10m time()
    600

eval instant at 0m vector(1) + vector(2)
    {} 3
"""


@pytest.mark.parametrize("name, script", [
    ("staleness", STALENESS), ("rates", RATES), ("aggregations", AGGREGATIONS),
    ("binary", BINARY), ("subqueries", SUBQUERIES), ("at_modifier", AT_MODIFIER),
    ("functions", FUNCTIONS),
])
def test_script(name: str, script: str) -> None:
    assert run_script(script) > 0


def test_runner_reports_a_wrong_expectation() -> None:
    with pytest.raises(ScriptError, match="values of"):
        run_script("load 1m\n    m 1\n\neval instant at 0m m\n    m 2\n")
    with pytest.raises(ScriptError, match="expected an error"):
        run_script("load 1m\n    m 1\n\neval_fail instant at 0m m\n")
