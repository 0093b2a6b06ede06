// The transfer's generations (the first transfer, then each sync): when, and what each created, updated, deleted; with the resources it changed.
MATCH (t:Transfer {name: $transfer})-[:GENERATION]->(g:Generation)
OPTIONAL MATCH (n:Resource {transfer: $transfer})
WHERE n.updated_generation = g.number OR n.deleted_generation = g.number OR n.changed_generation = g.number
WITH g, collect(n)[..100] AS changed
RETURN g, changed, g.number AS number, g.kind AS kind, g.state AS state, toString(g.started_at) AS started,
       toString(g.ended_at) AS ended, g.since AS since, g.created AS created, g.updated AS updated,
       g.unchanged AS unchanged, g.deleted AS deleted, g.removed AS removed, g.conflicts AS conflicts,
       g.refused AS refused
ORDER BY number
