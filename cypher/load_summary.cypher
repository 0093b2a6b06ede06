MATCH (b:Bundle&!Resource {transfer: $transfer})
RETURN b.status AS status, count(b) AS count, sum(b.size) AS resources
