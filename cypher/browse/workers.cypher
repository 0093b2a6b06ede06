// The load workers of a transfer: what each loaded, its rate, when it was last seen, and bundles taken over from workers that stopped.
MATCH (w:Worker {transfer: $transfer})
OPTIONAL MATCH (b:Bundle {transfer: $transfer})
WHERE b.taken_over_from = w.uid
WITH w, count(b) AS taken_over
RETURN w, w.uid AS worker, w.host AS host, w.pid AS pid, w.state AS state, w.bundles AS bundles,
       w.loaded AS loaded, w.created AS created, w.seconds AS seconds,
       duration.inSeconds(w.last_seen, datetime()).seconds AS seen_seconds_ago, taken_over
ORDER BY w.started_at
