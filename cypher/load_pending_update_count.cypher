// How many loaded resources still wait for their deferred cycle references.
MATCH (n:Resource {transfer: $transfer, status: 'loaded'})
WHERE n.pending_update = true
RETURN count(n) AS pending
