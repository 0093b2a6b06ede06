// One worker at a time restores the deferred cycle references: a lease on the transfer.
MATCH (t:Transfer {name: $transfer})
SET t.claim_probe = coalesce(t.claim_probe, 0) + 1
WITH t, t.update_owner IS NULL OR t.update_owner = $worker
        OR t.update_lease_until < datetime() AS free
SET t.update_owner = CASE WHEN free THEN $worker ELSE t.update_owner END,
    t.update_lease_until = CASE WHEN free THEN datetime() + duration({seconds: $lease_seconds})
                           ELSE t.update_lease_until END
RETURN free
