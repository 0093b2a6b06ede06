// hash -> target reference for every loaded resource of a transfer.
MATCH (n:Resource {transfer: $transfer, status: 'loaded'})
WHERE n.linkage_hash IS NOT NULL
RETURN n.linkage_hash AS linkage_hash, n.type + '/' + n.target_id AS target
ORDER BY n.type, n.target_id
