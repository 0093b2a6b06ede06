// Peel one level of the creation order: resources whose dependencies all have a lower level.
// Self references do not block (the resource refers to its own entry); dropped or deferred ones neither.
MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
WHERE n.level IS NULL
  AND NOT EXISTS {
    MATCH (n)-[r:REFERENCES]->(m:Resource {status: 'crawled'})
    WHERE m <> n AND r.dropped IS NULL AND r.deferred IS NULL
      AND (m.level IS NULL OR m.level >= $level)
  }
SET n.level = $level
RETURN count(n) AS assigned
