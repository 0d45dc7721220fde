-- The registry's inventory: clusters, organizations, node groups, nodes and their cluster memberships,
-- the capability and role catalog, role assignments, workloads and egress pools. Every change to these
-- tables is written together with a row in `changes` (0003) and an audit event, in one transaction.

CREATE TABLE clusters (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  description text NOT NULL DEFAULT '',
  region      text NOT NULL DEFAULT '',
  labels      jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  description text NOT NULL DEFAULT '',
  labels      jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Inventory folders per cluster; a group's parent is in the same cluster (checked by the service).
CREATE TABLE node_groups (
  id              text PRIMARY KEY,
  cluster_id      text NOT NULL REFERENCES clusters (id),
  name            text NOT NULL,
  parent_group_id text REFERENCES node_groups (id),
  description     text NOT NULL DEFAULT '',
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX node_groups_sibling_name ON node_groups (cluster_id, COALESCE(parent_group_id, ''), name);

-- Host-level identities. facts holds the fabric.common.v1.NodeFacts message (protobuf binary).
CREATE TABLE nodes (
  id           text PRIMARY KEY,
  name         text NOT NULL UNIQUE,
  facts        bytea NOT NULL,
  capabilities text[] NOT NULL DEFAULT '{}',
  state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'revoked')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);

-- One isolated membership per node and cluster; its node group is in the same cluster.
CREATE TABLE memberships (
  id                    text PRIMARY KEY,
  node_id               text NOT NULL REFERENCES nodes (id),
  cluster_id            text NOT NULL REFERENCES clusters (id),
  state                 text NOT NULL CHECK (state IN ('active', 'disabled', 'revoked')),
  node_group_id         text REFERENCES node_groups (id),
  certificate_serial    text NOT NULL DEFAULT '',
  certificate_not_after timestamptz,
  joined_at             timestamptz NOT NULL DEFAULT now(),
  last_seen_at          timestamptz,
  disabled_at           timestamptz,
  disabled_reason       text NOT NULL DEFAULT '',
  UNIQUE (node_id, cluster_id)
);
CREATE INDEX memberships_cluster ON memberships (cluster_id, node_id);
CREATE INDEX memberships_group ON memberships (node_group_id) WHERE node_group_id IS NOT NULL;

-- What each RegisterNode call produced, keyed by join request: a retry returns the same answer.
CREATE TABLE registrations (
  join_request_id text PRIMARY KEY,
  node_id         text NOT NULL REFERENCES nodes (id),
  cluster_id      text NOT NULL REFERENCES clusters (id),
  membership_id   text NOT NULL REFERENCES memberships (id),
  node_created    boolean NOT NULL,
  registered_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE capabilities (
  name        text PRIMARY KEY,
  description text NOT NULL DEFAULT '',
  built_in    boolean NOT NULL DEFAULT false
);

CREATE TABLE roles (
  name                  text PRIMARY KEY,
  description           text NOT NULL DEFAULT '',
  required_capabilities text[] NOT NULL DEFAULT '{}',
  built_in              boolean NOT NULL DEFAULT false,
  created_at            timestamptz NOT NULL DEFAULT now(),
  created_by_kind       text NOT NULL DEFAULT '',
  created_by_id         text NOT NULL DEFAULT ''
);

-- organization_id NULL = the role applies to every organization.
CREATE TABLE role_assignments (
  id               text PRIMARY KEY,
  node_id          text NOT NULL REFERENCES nodes (id),
  cluster_id       text NOT NULL REFERENCES clusters (id),
  role             text NOT NULL REFERENCES roles (name),
  organization_id  text REFERENCES organizations (id),
  assigned_at      timestamptz NOT NULL DEFAULT now(),
  assigned_by_kind text NOT NULL,
  assigned_by_id   text NOT NULL,
  UNIQUE NULLS NOT DISTINCT (node_id, cluster_id, role, organization_id)
);
CREATE INDEX role_assignments_cluster ON role_assignments (cluster_id, node_id);

-- Desired state. spec holds the fabric.common.v1.WorkloadSpec message; the columns beside it are the
-- spec's fields that other rows refer to or that lists filter on.
CREATE TABLE workloads (
  id              text PRIMARY KEY,
  cluster_id      text NOT NULL REFERENCES clusters (id),
  role            text NOT NULL REFERENCES roles (name),
  organization_id text REFERENCES organizations (id),
  environment     smallint NOT NULL,
  spec            bytea NOT NULL,
  generation      bigint NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  updated_by_kind text NOT NULL,
  updated_by_id   text NOT NULL
);
CREATE INDEX workloads_cluster ON workloads (cluster_id);

CREATE TABLE egress_pools (
  id               text PRIMARY KEY,
  cluster_id       text NOT NULL REFERENCES clusters (id),
  name             text NOT NULL,
  description      text NOT NULL DEFAULT '',
  organization_ids text[] NOT NULL DEFAULT '{}',
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (cluster_id, name)
);

CREATE TABLE egress_pool_members (
  pool_id  text NOT NULL REFERENCES egress_pools (id),
  node_id  text NOT NULL REFERENCES nodes (id),
  weight   integer NOT NULL CHECK (weight BETWEEN 1 AND 1000),
  added_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pool_id, node_id)
);
