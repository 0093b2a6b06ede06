MATCH (t:Transfer {name: $name})
WHERE t.lock_owner = $owner
SET t.lock_heartbeat = datetime()
