// Dangling references: who refers, from which element, to what, and why it is missing.
MATCH (a:Resource {transfer: $transfer})-[r:REFERENCES]->(b:Resource)
WHERE a.status IN ['crawled', 'planned', 'skipped'] AND b.status IN ['placeholder', 'dangling']
RETURN a.key AS referrer, r.path AS path, r.reference AS reference, b.key AS target,
       b.status AS status, b.error AS detail
ORDER BY referrer, path
LIMIT $limit
