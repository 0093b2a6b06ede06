MATCH (n:Resource {transfer: $transfer})
RETURN n.status AS status, count(n) AS count
