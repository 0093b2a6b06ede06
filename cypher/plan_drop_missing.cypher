// --on-dangling drop-reference: the loader removes these references.
MATCH (b:Resource {transfer: $transfer})
USING INDEX b:Resource(transfer, status)
WHERE b.status IN ['placeholder', 'dangling']
MATCH (a:Resource {status: 'crawled'})-[r:REFERENCES]->(b)
SET r.dropped = true
RETURN count(r) AS dropped
