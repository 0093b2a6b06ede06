CREATE INDEX resource_transfer_level IF NOT EXISTS FOR (n:Resource) ON (n.transfer, n.level)
