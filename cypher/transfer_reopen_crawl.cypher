// Transition back to created: new seeds are crawled into the transfer.
MATCH (t:Transfer {name: $name})
SET t.crawl_done = false, t.updated_at = datetime()
