// The worker that restored the deferred cycle references lets go of the transfer.
MATCH (t:Transfer {name: $transfer})
WHERE t.update_owner = $worker
SET t.update_owner = null, t.update_lease_until = null
