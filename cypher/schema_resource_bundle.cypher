CREATE INDEX resource_transfer_bundle IF NOT EXISTS FOR (n:Resource) ON (n.transfer, n.bundle)
