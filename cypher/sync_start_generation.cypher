// Transition: a new generation starts. The first transfer, if it has no generation yet, is
// recorded as generation 1 from what it loaded.
MATCH (t:Transfer {name: $name})
OPTIONAL MATCH (old:Generation {transfer: $name})
WITH t, max(old.number) AS last
CALL (t, last) {
  WITH t, last WHERE last IS NULL
  OPTIONAL MATCH (n:Resource {transfer: t.name, status: 'loaded'})
  WITH t, count(n) AS loaded
  CREATE (first:Generation {uid: t.name + '|generation|1', transfer: t.name, number: 1, kind: 'transfer',
                            state: 'done', started_at: t.created_at, ended_at: t.updated_at,
                            created: loaded, updated: 0, unchanged: 0, deleted: 0, removed: 0,
                            conflicts: 0, refused: 0})
  CREATE (t)-[:GENERATION]->(first)
}
WITH t, coalesce(last, 1) + 1 AS number
CREATE (g:Generation {uid: t.name + '|generation|' + toString(number), transfer: t.name, number: number,
                      kind: 'sync', state: 'running', since: t.synced_from, instant: $instant,
                      started_at: datetime(), delete: $delete, overwrite: $overwrite})
CREATE (t)-[:GENERATION]->(g)
SET t.updated_at = datetime()
RETURN g {.*} AS generation
