// The resource types of which a transfer holds resources (their source history is read).
MATCH (n:Resource {transfer: $transfer})
WHERE n.status <> 'placeholder' AND n.type <> 'Unresolvable'
RETURN DISTINCT n.type AS type
