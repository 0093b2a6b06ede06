// Place resources of one overlap level (by element id) in their bundles. The crawl writes at the
// same time, so each resource is locked first (the SET) and checked again under the lock: one
// staged again meanwhile with a reference to something not placed waits for a later round.
UNWIND $rows AS row
UNWIND row.ids AS id
MATCH (n:Resource)
WHERE elementId(n) = id
SET n.placing = true
WITH n, row
CALL (n, row) {
  WITH n, row
  WHERE n.status = 'crawled' AND NOT EXISTS {
      MATCH (n)-[r:REFERENCES]->(m:Resource)
      WHERE m <> n AND r.dropped IS NULL AND r.deferred IS NULL AND m.level IS NULL
    }
  SET n.level = $level, n.bundle = row.bundle, n.status = 'planned'
}
REMOVE n.placing
