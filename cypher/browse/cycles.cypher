// Cycles: resources with a REFERENCES path back to themselves within three hops (self references, pairs, triangles).
MATCH path = (n:Resource {transfer: $transfer})-[:REFERENCES*1..3]->(n)
RETURN path, n.key AS key, length(path) AS hops
ORDER BY hops, key
LIMIT 300
