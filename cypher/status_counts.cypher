// Staged resources per type and status.
MATCH (n:Resource {transfer: $transfer})
RETURN n.type AS type, n.status AS status, count(n) AS count
ORDER BY type, status
