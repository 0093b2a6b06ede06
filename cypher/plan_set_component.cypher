// Place the members of one strongly connected component (a cycle) on a level together.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.level = row.level, n.scc = row.scc
