// The neighbourhood of one patient ($key, e.g. 'Patient/123'): what refers to it and what those refer to.
MATCH path = (p:Resource {transfer: $transfer, key: $key})-[:REFERENCES*0..2]-(:Resource)
RETURN path
LIMIT 300
