// The load workers of a transfer: what each loaded, its rate, the bundles it holds leases on, when it was last seen, and bundles taken over from it after its lease expired.
MATCH (w:Worker {transfer: $transfer})
OPTIONAL MATCH (b:Bundle {transfer: $transfer})
WHERE NOT b:Resource AND (b.taken_over_from = w.uid OR (b.status = 'sending' AND b.lease_owner = w.uid))
WITH w,
     count(CASE WHEN b.taken_over_from = w.uid THEN 1 END) AS taken_over,
     collect(CASE WHEN b.status = 'sending' AND b.lease_owner = w.uid
                  THEN {bundle: b.number, expires_in: duration.inSeconds(datetime(), b.lease_until).seconds} END) AS leases
RETURN w, w.uid AS worker, w.host AS host, w.pid AS pid, w.state AS state, w.bundles AS bundles,
       w.loaded AS loaded, w.created AS created, w.seconds AS seconds,
       duration.inSeconds(w.last_seen, datetime()).seconds AS seen_seconds_ago, taken_over, leases
ORDER BY w.started_at
