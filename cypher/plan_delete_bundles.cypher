MATCH (b:Bundle&!Resource {transfer: $transfer})
WHERE b.status = 'planned'
DELETE b
