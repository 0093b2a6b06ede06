// A transfer crawled without a target learns it when the load starts.
MATCH (t:Transfer {name: $name})
SET t.target = $target, t.updated_at = datetime()
