// Load workers of a transfer that are still working (seen within the lease).
MATCH (w:Worker {transfer: $transfer, state: 'working'})
WHERE w.last_seen >= datetime() - duration({seconds: $seconds})
RETURN count(w) AS alive, head(collect(w.uid)) AS example
