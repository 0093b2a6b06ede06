MATCH (n:Resource {transfer: $transfer, status: 'crawled'})
RETURN max(n.level) AS max_level
