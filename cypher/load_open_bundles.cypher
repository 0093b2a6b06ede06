// Bundles of the lowest level not loaded that are still to be sent or being sent (any lease):
// while there are some, a worker with nothing to claim waits and looks again. Planned ones
// count too: the level a claim found all taken may be done by the time of this count, and
// the next level's bundles, all planned, are work for this worker (counting only those being
// sent made a worker stop while work was left). A level held only by failed bundles stops
// the workers: the bundles above it wait for a retry.
OPTIONAL MATCH (open:Bundle&!Resource {transfer: $transfer})
WHERE open.status <> 'loaded'
WITH min(open.level) AS level
OPTIONAL MATCH (b:Bundle&!Resource {transfer: $transfer, level: level})
WHERE b.status IN ['planned', 'sending']
RETURN count(CASE b.status WHEN 'planned' THEN 1 END) AS planned,
       count(CASE b.status WHEN 'sending' THEN 1 END) AS sending
