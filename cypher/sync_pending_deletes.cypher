// Loaded resources to remove from the target, those that others refer to last, each with the
// resources still on the target (not being removed) that refer to it.
MATCH (n:Resource {transfer: $transfer, sync_pending: 'delete'})
WHERE n.status = 'loaded'
OPTIONAL MATCH (m:Resource)-[:REFERENCES]->(n)
WHERE m.status = 'loaded' AND coalesce(m.sync_pending, '') <> 'delete'
WITH n, collect(DISTINCT m.key)[..3] AS referrers
RETURN n.uid AS uid, n.key AS key, n.type AS type, n.target_id AS target_id,
       n.sync_reason AS reason, referrers
ORDER BY coalesce(n.level, 0) DESC, n.uid
