// Transition planned -> loaded when every bundle is loaded; the load's time accumulates over runs.
MATCH (t:Transfer {name: $name})
SET t.load_done = $done, t.seconds_load = coalesce(t.seconds_load, 0.0) + $seconds,
    t.param_concurrency = $concurrency, t.updated_at = datetime()
