OPTIONAL MATCH (b:Bundle&!Resource {transfer: $transfer})
RETURN coalesce(max(b.number) + 1, 0) AS next
