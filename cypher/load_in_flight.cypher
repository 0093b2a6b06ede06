// Bundles a live worker is sending (its lease not expired): the others wait for them.
MATCH (b:Bundle&!Resource {transfer: $transfer, status: 'sending'})
WHERE b.lease_until >= datetime()
RETURN count(b) AS in_flight
