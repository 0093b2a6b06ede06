// The plan stopped (dangling references): the transfer is not planned.
MATCH (t:Transfer {name: $name})
SET t.plan_done = false, t.updated_at = datetime()
