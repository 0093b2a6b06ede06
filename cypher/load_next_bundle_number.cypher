OPTIONAL MATCH (b:Bundle {transfer: $transfer})
RETURN coalesce(max(b.number) + 1, 0) AS next
