// Transition running -> done: the counts of what the generation changed, and the instant from
// which the next sync looks for changes.
MATCH (t:Transfer {name: $name})-[:GENERATION]->(g:Generation {number: $number})
OPTIONAL MATCH (n:Resource {transfer: $name, status: 'loaded'})
WITH t, g,
     sum(CASE WHEN n.loaded_at >= g.started_at AND coalesce(n.updated_generation, 0) <> $number
         THEN 1 ELSE 0 END) AS created,
     sum(CASE WHEN n.loaded_at < g.started_at AND coalesce(n.updated_generation, 0) <> $number
              AND n.sync_pending IS NULL THEN 1 ELSE 0 END) AS unchanged
SET g.state = 'done', g.ended_at = datetime(), g += $counts, g.created = created, g.unchanged = unchanged,
    t.synced_from = g.instant, t.updated_at = datetime()
RETURN g {.*} AS generation
