-- Isolated memberships. A node may be a member of several clusters, and what it reports through one
-- membership (join facts, capabilities, heartbeats) belongs to that membership only: a join into one
-- cluster, or a session with that cluster's certificate, never changes what another cluster holds.
-- The node row keeps the host identity; its home cluster is the one it was created in, whose membership
-- supplies the host picture the router and platform-wide views use.

ALTER TABLE memberships ADD COLUMN facts bytea, ADD COLUMN capabilities text[] NOT NULL DEFAULT '{}';
UPDATE memberships m SET facts = n.facts, capabilities = n.capabilities FROM nodes n WHERE n.id = m.node_id;
ALTER TABLE memberships ALTER COLUMN facts SET NOT NULL;

ALTER TABLE nodes ADD COLUMN home_cluster_id text REFERENCES clusters (id);
UPDATE nodes n SET home_cluster_id = COALESCE(
  (SELECT r.cluster_id FROM registrations r WHERE r.node_id = n.id AND r.node_created
   ORDER BY r.registered_at LIMIT 1),
  (SELECT m.cluster_id FROM memberships m WHERE m.node_id = n.id ORDER BY m.joined_at, m.id LIMIT 1));
ALTER TABLE nodes ALTER COLUMN home_cluster_id SET NOT NULL;
ALTER TABLE nodes DROP COLUMN facts, DROP COLUMN capabilities;

-- Latest heartbeat state per membership: a session reports for the cluster of its certificate only.
ALTER TABLE node_status ADD COLUMN cluster_id text;
UPDATE node_status s SET cluster_id = n.home_cluster_id FROM nodes n WHERE n.id = s.node_id;
ALTER TABLE node_status ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE node_status DROP CONSTRAINT node_status_pkey;
ALTER TABLE node_status ADD PRIMARY KEY (node_id, cluster_id);
