// Dangling references: resources the source does not have, and who refers to them from which element.
MATCH (a:Resource {transfer: $transfer})-[r:REFERENCES]->(b:Resource)
WHERE b.status IN ['dangling', 'placeholder']
RETURN a, r, b, a.key AS referrer, r.path AS path, b.key AS missing, b.error AS detail
ORDER BY referrer, path
LIMIT 300
