// Bundles of the lowest level not loaded that are still to be sent or being sent (any lease):
// while there are some, a worker with nothing to claim waits and looks again. Planned ones
// count too: the level a claim found all taken may be done by the time of this count, and
// the next level's bundles, all planned, are work for this worker (counting only those being
// sent made a worker stop while work was left). A level held only by failed bundles stops
// the workers: the bundles above it wait for a retry.
// Each bundle's level and status are read once, and the level and the counts come from those
// values: Neo4j reads committed data, and other workers mark bundles loaded meanwhile, so
// reading the lowest open level first and its bundles again after could find that level's
// last bundle loaded in between, count nothing and stop a worker while the next level waits.
// (Folding this into load_claim_bundle was tried and reverted: that claim read twice too.)
MATCH (b:Bundle&!Resource {transfer: $transfer})
WITH b.level AS level, b.status AS status
WHERE status <> 'loaded'
WITH level, collect(status) AS statuses
ORDER BY level
LIMIT 1
RETURN size([s IN statuses WHERE s = 'planned']) AS planned,
       size([s IN statuses WHERE s = 'sending']) AS sending
