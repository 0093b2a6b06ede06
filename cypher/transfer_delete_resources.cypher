// Delete one batch of a transfer's staged resources; call until it returns 0.
MATCH (n:Resource {transfer: $name})
WITH n LIMIT $batch
DETACH DELETE n
RETURN count(*) AS deleted
