// How many references point at resources the source does not have (or that were not fetched).
MATCH (a:Resource {transfer: $transfer, status: 'crawled'})-[r:REFERENCES]->(b:Resource)
WHERE b.status IN ['placeholder', 'dangling', 'skipped']
RETURN count(r) AS missing
