// Resources ready while the crawl goes on (overlap): staged ('crawled'), not placed yet, and
// every resource they refer to already placed (it has a level), so none of them waits on a
// placeholder, a dangling reference or a resource whose own references are not all staged.
// Self references do not block; they are deferred (plan_defer_self_references). Cycles wait
// for the plan after the crawl. Same shape as plan_ready_first.
MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
WHERE NOT EXISTS {
    MATCH (n)-[r:REFERENCES]->(m:Resource)
    WHERE m <> n AND r.dropped IS NULL AND r.deferred IS NULL AND m.level IS NULL
  }
RETURN collect(elementId(n)) AS ids, collect(COUNT { (n)-[:REFERENCES]->() }) AS references
