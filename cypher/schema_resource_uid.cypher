// One staged resource per transfer and source Type/id (uid = transfer + '|' + Type/id).
CREATE CONSTRAINT resource_uid IF NOT EXISTS FOR (n:Resource) REQUIRE n.uid IS UNIQUE
