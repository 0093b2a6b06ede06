// --on-dangling skip-resource: skip referrers of missing or skipped resources (call until 0).
MATCH (a:Resource {transfer: $transfer, status: 'crawled'})-[r:REFERENCES]->(b:Resource)
WHERE b.status IN ['placeholder', 'dangling', 'skipped']
WITH a, min(b.key) AS because
SET a.status = 'skipped', a.error = 'references missing ' + because
RETURN count(a) AS skipped
