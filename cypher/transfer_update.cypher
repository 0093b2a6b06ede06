MATCH (t:Transfer {name: $name})
SET t += $props, t.updated_at = datetime()
