// Failed resources and their error, most recent first.
MATCH (n:Resource {transfer: $transfer, status: 'failed'})
RETURN n.key AS key, n.bundle AS bundle, n.error AS error
ORDER BY n.bundle, n.key
LIMIT $limit
