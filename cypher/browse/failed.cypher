// Failed resources with the target's error (its OperationOutcome text) and their bundle.
MATCH (n:Resource {transfer: $transfer, status: 'failed'})
RETURN n, n.key AS key, n.bundle AS bundle, n.error AS error
ORDER BY bundle, key
LIMIT 300
