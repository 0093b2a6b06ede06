// Dangling references: who refers, from which element, to what, and why it is missing.
// Starts from the (few) missing resources, like plan_missing_count.
MATCH (b:Resource {transfer: $transfer})
USING INDEX b:Resource(transfer, status)
WHERE b.status IN ['placeholder', 'dangling']
MATCH (a:Resource)-[r:REFERENCES]->(b)
WHERE a.status IN ['crawled', 'planned', 'skipped']
RETURN a.key AS referrer, r.path AS path, r.reference AS reference, b.key AS target,
       b.status AS status, b.error AS detail
ORDER BY referrer, path
LIMIT $limit
