// Resources ready while the crawl goes on (overlap): staged ('crawled'), not placed yet, and
// every resource they refer to already placed (it has a level), so none of them waits on a
// placeholder, a dangling reference or a resource whose own references are not all staged.
// A self reference blocks until it is deferred: the round defers them
// (plan_defer_self_references) before this query, but the crawl goes on staging in between, and
// a resource placed with its self reference would name its own entry in the create, which HAPI
// fails on (500, StackOverflowError). It is placed by the next round. Cycles wait for the plan
// after the crawl. Same shape as plan_ready_first.
MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
WHERE NOT EXISTS {
    MATCH (n)-[r:REFERENCES]->(m:Resource)
    WHERE r.dropped IS NULL AND r.deferred IS NULL AND m.level IS NULL
  }
RETURN collect(elementId(n)) AS ids, collect(COUNT { (n)-[:REFERENCES]->() }) AS references
