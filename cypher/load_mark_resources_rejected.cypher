// Resources the target refused, each with its OperationOutcome text.
UNWIND $rows AS row
MATCH (n:Resource {uid: row.uid})
SET n.status = 'rejected', n.error = row.error, n.rejected_at = datetime()
