// Bundles of the lowest level not loaded that are being sent: the other workers wait for them.
// Any lease: one that expired is claimed (load_claim_bundle) on the next look, so a worker never
// stops while a bundle it could take over is left (a lease running out between that claim and
// this count made a worker stop early).
OPTIONAL MATCH (open:Bundle&!Resource {transfer: $transfer})
WHERE open.status <> 'loaded'
WITH min(open.level) AS level
OPTIONAL MATCH (b:Bundle&!Resource {transfer: $transfer, level: level, status: 'sending'})
RETURN count(b) AS in_flight
