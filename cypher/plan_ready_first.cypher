// The first level of a round: every resource not placed yet ('crawled') that depends on no
// other resource not placed yet. Self references do not block (the resource refers to its own
// entry); dropped or deferred ones neither. One list of element ids, not a row each (the driver
// spends ~30 us per record), with each one's number of references (bundles are sized by both);
// index order: any order is a valid plan.
MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
WHERE NOT EXISTS {
    MATCH (n)-[r:REFERENCES]->(m:Resource {status: 'crawled'})
    WHERE m <> n AND r.dropped IS NULL AND r.deferred IS NULL
  }
RETURN collect(elementId(n)) AS ids, collect(COUNT { (n)-[:REFERENCES]->() }) AS references
