MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
WHERE n.level IS NULL
RETURN count(n) AS unassigned
