// Create the bundle nodes of a plan from the bundle numbers of their members.
MATCH (n:Resource {transfer: $transfer, status: 'planned'})
WHERE n.bundle >= $first
WITH n.bundle AS number, n.level AS level, count(n) AS size
MERGE (b:Bundle {uid: $transfer + '|bundle|' + toString(number)})
ON CREATE SET b.transfer = $transfer, b.number = number, b.level = level, b.status = 'planned'
SET b.size = size
RETURN count(b) AS bundles
