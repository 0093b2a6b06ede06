// A worker claims one ready bundle with a lease: one of the lowest level that is not loaded yet
// (every bundle it depends on is on a lower level, so loaded), planned or left 'sending' by a
// worker whose lease expired (or, retrying, failed). The first SET takes the transfer's write
// lock, so concurrent claims queue and each reads what the one before committed.
MATCH (t:Transfer {name: $transfer})
SET t.claim_probe = coalesce(t.claim_probe, 0) + 1
WITH t
OPTIONAL MATCH (open:Bundle&!Resource {transfer: $transfer})
WHERE open.status <> 'loaded'
WITH t, min(open.level) AS level
MATCH (b:Bundle&!Resource {transfer: $transfer, level: level})
WHERE b.status = 'planned'
   OR (b.status = 'sending' AND (b.lease_until IS NULL OR b.lease_until < datetime()))
   OR ($retry_failed AND b.status = 'failed')
WITH b ORDER BY b.number LIMIT 1
WITH b, b.status AS previous, b.lease_owner AS previous_owner
SET b.status = 'sending', b.lease_owner = $worker,
    b.lease_until = datetime() + duration({seconds: $lease_seconds}),
    b.takeovers = coalesce(b.takeovers, 0) + CASE WHEN previous = 'sending' THEN 1 ELSE 0 END,
    b.taken_over_from = CASE WHEN previous = 'sending' THEN previous_owner ELSE b.taken_over_from END
RETURN b.number AS number, previous AS status, previous_owner
