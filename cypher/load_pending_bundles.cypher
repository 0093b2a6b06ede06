// Bundles still to send, in creation order.
MATCH (b:Bundle&!Resource {transfer: $transfer})
WHERE b.status IN ['planned', 'sending'] OR ($retry_failed AND b.status = 'failed')
RETURN b.number AS number, b.level AS level, b.status AS status, b.size AS size
ORDER BY b.number
