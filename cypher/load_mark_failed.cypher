// The target rejected a bundle: keep its OperationOutcome text on the bundle and its resources.
MATCH (b:Bundle {uid: $uid})
SET b.status = 'failed', b.error = $error, b.failed_at = datetime()
WITH b
MATCH (n:Resource {transfer: b.transfer, bundle: b.number})
WHERE NOT n.status IN ['loaded', 'rejected', 'blocked']
SET n.status = 'failed', n.error = coalesce($errors[n.uid], $error)
