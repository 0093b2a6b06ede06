// An export job was started for a seed: a crawl killed while it runs polls the same job again
// instead of starting another.
MATCH (t:Transfer {name: $name})
SET t.export_seed = $seed, t.export_status_url = $status_url, t.updated_at = datetime()
