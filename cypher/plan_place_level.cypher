// Place resources of one level (by element id, from plan_ready_*) in their bundles.
UNWIND $rows AS row
UNWIND row.ids AS id
MATCH (n:Resource)
WHERE elementId(n) = id
SET n.level = $level, n.bundle = row.bundle, n.status = 'planned'
