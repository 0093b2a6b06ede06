// How many references point at resources the source does not have (or that were not fetched).
// Starts from the (few) missing resources of this transfer, by index (the planner would
// otherwise scan every Resource of every transfer: 6 s at 1M).
MATCH (b:Resource {transfer: $transfer})
USING INDEX b:Resource(transfer, status)
WHERE b.status IN ['placeholder', 'dangling', 'skipped']
MATCH (a:Resource {status: 'crawled'})-[r:REFERENCES]->(b)
RETURN count(r) AS missing
