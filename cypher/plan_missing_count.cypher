// How many references point at resources the source does not have (or that were not fetched).
// Starts from the (few) missing resources, not from every reference.
MATCH (b:Resource {transfer: $transfer})
WHERE b.status IN ['placeholder', 'dangling', 'skipped']
MATCH (a:Resource {status: 'crawled'})-[r:REFERENCES]->(b)
RETURN count(r) AS missing
