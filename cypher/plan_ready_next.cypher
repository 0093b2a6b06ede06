// The next level: only referrers of the level just placed can have become ready, so this
// touches the references into that level, not the whole graph (see plan_ready_first).
MATCH (:Resource {transfer: $transfer, level: $level - 1})<-[:REFERENCES]-(n:Resource {status: 'crawled'})
WITH DISTINCT n
WHERE NOT EXISTS {
    MATCH (n)-[r:REFERENCES]->(m:Resource {status: 'crawled'})
    WHERE m <> n AND r.dropped IS NULL AND r.deferred IS NULL
  }
RETURN collect(elementId(n)) AS ids, collect(COUNT { (n)-[:REFERENCES]->() }) AS references
