// The first level a plan may use: above every level placed so far (by an earlier plan or while
// the crawl went on), so that bundle order by level stays an order of creation.
MATCH (n:Resource {transfer: $transfer})
WHERE n.level IS NOT NULL
RETURN coalesce(max(n.level) + 1, 0) AS next
