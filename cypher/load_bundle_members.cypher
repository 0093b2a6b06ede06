// The resources of one bundle still to send with, for each reference, where its target went
// (members a refused bundle's isolation already loaded, rejected or blocked are done).
MATCH (n:Resource {transfer: $transfer, bundle: $number})
WHERE NOT n.status IN ['loaded', 'rejected', 'blocked']
OPTIONAL MATCH (n)-[r:REFERENCES]->(m:Resource)
WITH n, collect(CASE WHEN r IS NULL THEN null ELSE {
  path: r.path, kind: r.kind, deferred: coalesce(r.deferred, false), dropped: coalesce(r.dropped, false),
  uid: m.uid, type: m.type, target_id: m.target_id, target_version: m.target_version,
  bundle: m.bundle, status: m.status, key: m.key, error: m.error
} END) AS refs
RETURN n.uid AS uid, n.key AS key, n.type AS type, n.json AS json, n.status AS status,
       n.target_id AS target_id, n.scc AS scc, refs
ORDER BY n.uid
