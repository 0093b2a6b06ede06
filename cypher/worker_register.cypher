// A load worker joins a transfer.
MERGE (w:Worker {uid: $worker})
ON CREATE SET w.transfer = $transfer, w.host = $host, w.pid = $pid, w.started_at = datetime(),
              w.bundles = 0, w.loaded = 0, w.created = 0
SET w.last_seen = datetime(), w.state = 'working'
