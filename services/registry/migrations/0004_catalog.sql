-- The built-in capability and role catalog (DESIGN.md, Registry). Built-in entries cannot be changed;
-- admins add their own roles (and the capabilities those require) with CreateRole.
INSERT INTO capabilities (name, description, built_in) VALUES
  ('can_accept_client_ingress', 'Accepts client connections and maps them into fabric channels', true),
  ('can_accept_node_ingress', 'Accepts connections from other nodes', true),
  ('can_route_mesh', 'Routes overlay traffic between nodes', true),
  ('can_egress_internet', 'Exits traffic to the public internet', true),
  ('can_egress_private_network', 'Exits traffic into a private network', true),
  ('can_run_rdp_worker', 'Runs the RDP adapter', true),
  ('can_run_vnc_worker', 'Runs the VNC adapter', true),
  ('can_run_vpn_exit', 'Runs a VPN exit', true),
  ('can_run_vpn_connector', 'Runs a VPN connector', true),
  ('can_run_file_cache', 'Runs a file storage cache', true),
  ('can_run_update_cache', 'Mirrors approved update artifacts', true),
  ('can_run_video_relay', 'Relays video and audio', true);

INSERT INTO roles (name, description, required_capabilities, built_in) VALUES
  ('entry-node', 'Accepts client connections into the fabric', '{can_accept_client_ingress}', true),
  ('relay-node', 'Routes mesh traffic between nodes', '{can_route_mesh}', true),
  ('egress-node', 'Exits traffic into private networks; backs egress pools', '{can_egress_private_network}', true),
  ('rdp-worker', 'Runs the RDP adapter for remote desktop access', '{can_run_rdp_worker}', true),
  ('vnc-worker', 'Runs the VNC adapter for remote desktop access', '{can_run_vnc_worker}', true),
  ('vpn-exit', 'Terminates VPN tunnels', '{can_run_vpn_exit}', true),
  ('vpn-connector', 'Connects a site network into the fabric', '{can_run_vpn_connector}', true),
  ('file-storage-cache', 'Caches files close to users', '{can_run_file_cache}', true),
  ('update-cache', 'Mirrors approved update artifacts close to nodes', '{can_run_update_cache}', true),
  ('video-relay', 'Relays video and audio streams', '{can_run_video_relay}', true);
