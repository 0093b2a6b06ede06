// The next placeholders to fetch from the source (only seeds unless get_missing).
MATCH (n:Resource {transfer: $transfer, status: 'placeholder'})
WHERE NOT $seeds_only OR n.seed
RETURN n.uid AS uid, n.type AS type, n.source_id AS id
ORDER BY n.type
LIMIT $limit
