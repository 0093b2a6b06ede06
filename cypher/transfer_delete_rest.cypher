MATCH (b:Bundle&!Resource {transfer: $name})
DETACH DELETE b
WITH count(*) AS ignored
OPTIONAL MATCH (w:Worker {transfer: $name})
DETACH DELETE w
WITH count(*) AS ignored
MATCH (t:Transfer {name: $name})
DETACH DELETE t
