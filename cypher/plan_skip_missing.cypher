// --on-dangling skip-resource: skip referrers of missing or skipped resources (call until 0).
MATCH (b:Resource {transfer: $transfer})
USING INDEX b:Resource(transfer, status)
WHERE b.status IN ['placeholder', 'dangling', 'skipped']
MATCH (a:Resource {status: 'crawled'})-[r:REFERENCES]->(b)
WITH a, min(b.key) AS because
SET a.status = 'skipped', a.error = 'references missing ' + because
RETURN count(a) AS skipped
