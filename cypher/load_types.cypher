// The resource types of a transfer still to be loaded: the load asks the target about each.
MATCH (n:Resource {transfer: $transfer})
WHERE n.bundle IS NOT NULL AND n.status <> 'loaded'
RETURN DISTINCT n.type AS type
