// --on-dangling drop-reference: the loader removes these references.
MATCH (a:Resource {transfer: $transfer, status: 'crawled'})-[r:REFERENCES]->(b:Resource)
WHERE b.status IN ['placeholder', 'dangling']
SET r.dropped = true
RETURN count(r) AS dropped
