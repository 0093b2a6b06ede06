// A worker's heartbeat: its leases and its own record stay alive.
MATCH (w:Worker {uid: $worker})
SET w.last_seen = datetime()
WITH w
OPTIONAL MATCH (b:Bundle&!Resource {transfer: $transfer, status: 'sending', lease_owner: $worker})
SET b.lease_until = datetime() + duration({seconds: $lease_seconds})
