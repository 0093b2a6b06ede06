CREATE INDEX resource_transfer_sync IF NOT EXISTS FOR (n:Resource) ON (n.transfer, n.sync_pending)
