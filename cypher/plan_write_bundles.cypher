// Assign resources to bundles and create the bundle nodes.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.bundle = row.bundle, n.status = 'planned'
WITH DISTINCT row.bundle AS number, row.level AS level
MERGE (b:Bundle {uid: $transfer + '|bundle|' + toString(number)})
ON CREATE SET b.transfer = $transfer, b.number = number, b.level = level, b.status = 'planned'
WITH b
MATCH (n:Resource {transfer: $transfer, bundle: b.number})
WITH b, count(n) AS size
SET b.size = size
