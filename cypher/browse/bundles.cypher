// The bundles of a transfer in creation order: level, size, status, when sent and loaded, error.
MATCH (b:Bundle {transfer: $transfer})
WHERE NOT b:Resource
RETURN b.number AS number, b.level AS level, b.size AS size, b.status AS status,
       toString(b.sent_at) AS sent_at, toString(b.loaded_at) AS loaded_at, b.seconds AS seconds,
       b.attempts AS attempts, b.error AS error, toString(b.failed_at) AS failed_at,
       b.sent_at.epochMillis AS sent_ms, b.loaded_at.epochMillis AS loaded_ms
ORDER BY number
