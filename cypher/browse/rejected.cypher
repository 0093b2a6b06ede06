// Resources the target refused (rejected, with its OperationOutcome) and those held back because they refer to one (blocked, with the chain).
MATCH (n:Resource {transfer: $transfer})
WHERE n.status IN ['rejected', 'blocked']
RETURN n, n.key AS key, n.status AS status, n.error AS error
ORDER BY status DESC, key
LIMIT 300
