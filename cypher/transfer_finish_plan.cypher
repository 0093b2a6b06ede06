// Transition planning -> planned: new bundles, so the load is not done.
MATCH (t:Transfer {name: $name})
SET t.plan_done = true, t.load_done = false, t.seconds_plan = $seconds,
    t.param_bundle_size = $bundle_size, t.param_on_dangling = $on_dangling, t.updated_at = datetime()
