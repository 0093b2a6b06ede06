MATCH (b:Bundle {transfer: $transfer})
WHERE b.status = 'planned'
DELETE b
