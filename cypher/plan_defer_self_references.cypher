// A resource cannot name its own transaction entry (HAPI fails on it), so a self
// reference (Encounter.partOf -> itself) is created in the second phase, by an update.
MATCH (n:Resource {transfer: $transfer, status: 'crawled'})-[r:REFERENCES]->(n)
WHERE r.dropped IS NULL
SET r.deferred = true
RETURN count(r) AS deferred
