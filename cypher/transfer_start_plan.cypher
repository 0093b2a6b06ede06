// Transition crawled -> planning: a later plan must clear what this one writes.
MATCH (t:Transfer {name: $name})
SET t.plan_started = true, t.updated_at = datetime()
