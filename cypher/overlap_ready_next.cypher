// The next level of an overlap round: referrers of the level just placed that are now ready
// (see overlap_ready_first: an undeferred self reference blocks).
MATCH (:Resource {transfer: $transfer, level: $level - 1})<-[:REFERENCES]-(n:Resource {status: 'crawled'})
WITH DISTINCT n
WHERE NOT EXISTS {
    MATCH (n)-[r:REFERENCES]->(m:Resource)
    WHERE r.dropped IS NULL AND r.deferred IS NULL AND m.level IS NULL
  }
RETURN collect(elementId(n)) AS ids, collect(COUNT { (n)-[:REFERENCES]->() }) AS references
