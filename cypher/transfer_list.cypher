MATCH (t:Transfer)
RETURN t {.*} AS transfer
ORDER BY t.name
