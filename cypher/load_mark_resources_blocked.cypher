// Resources not sent because they refer to a rejected (or blocked) one: the chain is the error.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.status = 'blocked', n.error = row.error, n.blocked_at = datetime()
