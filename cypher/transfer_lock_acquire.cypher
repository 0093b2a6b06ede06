// Take the transfer's lock unless another live process holds it.
// The first SET takes the node's write lock, so concurrent callers queue here and each
// reads the owner the previous one committed.
MATCH (t:Transfer {name: $name})
SET t.lock_probe = coalesce(t.lock_probe, 0) + 1
WITH t, t.lock_owner AS owner, t.lock_heartbeat AS heartbeat
WITH t, owner, heartbeat,
     owner IS NULL OR owner = $owner OR owner IN $dead_owners
       OR heartbeat < datetime() - duration({seconds: $stale_seconds}) AS free
SET t.lock_owner = CASE WHEN free THEN $owner ELSE owner END,
    t.lock_heartbeat = CASE WHEN free THEN datetime() ELSE heartbeat END
RETURN free, owner, duration.inSeconds(heartbeat, datetime()).seconds AS seconds_since
