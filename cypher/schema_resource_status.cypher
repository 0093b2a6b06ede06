CREATE INDEX resource_transfer_status IF NOT EXISTS FOR (n:Resource) ON (n.transfer, n.status)
