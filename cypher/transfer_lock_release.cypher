MATCH (t:Transfer {name: $name})
WHERE t.lock_owner = $owner
SET t.lock_owner = null, t.lock_heartbeat = null
