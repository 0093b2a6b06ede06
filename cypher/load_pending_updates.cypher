// Resources created without their cycle-closing references, to be updated now.
MATCH (n:Resource {transfer: $transfer, status: 'loaded'})
WHERE n.pending_update = true
OPTIONAL MATCH (n)-[r:REFERENCES]->(m:Resource)
WITH n, collect(CASE WHEN r IS NULL THEN null ELSE {
  path: r.path, kind: r.kind, deferred: false, dropped: coalesce(r.dropped, false),
  uid: m.uid, type: m.type, target_id: m.target_id, target_version: m.target_version,
  bundle: m.bundle, status: m.status
} END) AS refs
RETURN n.uid AS uid, n.key AS key, n.type AS type, n.json AS json, n.status AS status,
       n.target_id AS target_id, refs
ORDER BY n.uid
LIMIT $limit
