// Loaded resources whose target copy is to be updated with their new source content.
MATCH (n:Resource {transfer: $transfer, sync_pending: 'update'})
WHERE n.status = 'loaded' AND ($after IS NULL OR n.uid > $after)
OPTIONAL MATCH (n)-[r:REFERENCES]->(m:Resource)
WITH n, collect(CASE WHEN r IS NULL THEN null ELSE {
  path: r.path, kind: r.kind, deferred: false, dropped: coalesce(r.dropped, false),
  uid: m.uid, type: m.type, target_id: m.target_id, target_version: m.target_version,
  bundle: m.bundle, status: m.status, key: m.key, error: m.error
} END) AS refs
RETURN n.uid AS uid, n.key AS key, n.type AS type, n.json AS json, n.status AS status,
       n.target_id AS target_id, n.target_version AS target_version, refs
ORDER BY n.uid
LIMIT $limit
