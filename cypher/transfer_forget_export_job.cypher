// The export job's files are staged, or the job failed, was cancelled or is gone: nothing to resume.
MATCH (t:Transfer {name: $name})
WHERE t.export_status_url = $status_url
REMOVE t.export_seed, t.export_status_url
SET t.updated_at = datetime()
