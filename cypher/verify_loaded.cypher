// Every loaded resource with where its references went, grouped by type for batched reads.
MATCH (n:Resource {transfer: $transfer, status: 'loaded'})
OPTIONAL MATCH (n)-[r:REFERENCES]->(m:Resource)
WITH n, collect(CASE WHEN r IS NULL THEN null ELSE {
  path: r.path, kind: r.kind, dropped: coalesce(r.dropped, false), type: m.type, target_id: m.target_id
} END) AS refs
RETURN n.key AS key, n.type AS type, n.json AS json, n.target_id AS target_id,
       n.linkage_hash AS linkage_hash, refs
ORDER BY n.type, n.uid
