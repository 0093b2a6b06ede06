// The resources still without a level (cycles and what depends on them) and their edges among themselves.
MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
WHERE n.level IS NULL
OPTIONAL MATCH (n)-[r:REFERENCES]->(m:Resource {status: 'crawled'})
WHERE m.level IS NULL AND r.dropped IS NULL AND r.deferred IS NULL
RETURN n.uid AS uid, collect(DISTINCT m.uid) AS targets, COUNT { (n)-[:REFERENCES]->() } AS references
