// What is still unfinished: resources not loaded (nor skipped) and bundles not loaded, per status, with examples.
MATCH (n:Resource {transfer: $transfer})
WHERE NOT n.status IN ['loaded', 'skipped']
RETURN 'resource' AS what, n.status AS status, n.type AS type, count(n) AS count, collect(n.key)[..5] AS examples
UNION ALL
MATCH (b:Bundle {transfer: $transfer})
WHERE b.status <> 'loaded' AND NOT b:Resource
RETURN 'bundle' AS what, b.status AS status, null AS type, count(b) AS count,
       [x IN collect(b.number)[..5] | toString(x)] AS examples
