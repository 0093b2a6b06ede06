// A load worker joins a transfer unless a process holds the transfer's lock (a crawl, a plan or
// a load without workers). The first SET takes the transfer's write lock, so a join and a lock
// taken at the same moment queue, and each sees what the other committed.
MATCH (t:Transfer {name: $transfer})
SET t.claim_probe = coalesce(t.claim_probe, 0) + 1
WITH t, t.lock_owner IS NOT NULL AND NOT t.lock_owner IN $dead_owners
        AND t.lock_heartbeat >= datetime() - duration({seconds: $stale_seconds}) AS locked
FOREACH (_ IN CASE WHEN locked THEN [] ELSE [1] END |
  MERGE (w:Worker {uid: $worker})
  ON CREATE SET w.transfer = $transfer, w.host = $host, w.pid = $pid, w.started_at = datetime(),
                w.bundles = 0, w.loaded = 0, w.created = 0
  SET w.last_seen = datetime(), w.state = 'working')
RETURN locked, t.lock_owner AS owner,
       duration.inSeconds(t.lock_heartbeat, datetime()).seconds AS seconds_since
