-- 0001_dsm_schema.sql: the part of the Dell Server Manager (DSM) schema the on-prem agent uses.
--
-- Column-compatible with the DSM Supabase database (CONTRACT.md section 3). Every statement is
-- idempotent so the file can be applied to an empty database (the lab) AND to an existing DSM
-- database, where it only adds what is missing: CREATE ... IF NOT EXISTS, ADD COLUMN IF NOT EXISTS,
-- ADD VALUE IF NOT EXISTS, CREATE OR REPLACE FUNCTION. It never drops or rewrites data and never
-- revokes table privileges (the DSM app relies on its own grants and RLS policies).

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- ---------------------------------------------------------------------------------------------
-- Enums (created when absent, then extended value by value so an existing enum gains what we use)
-- ---------------------------------------------------------------------------------------------
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'job_status'
                 AND typnamespace = 'public'::regnamespace) THEN
    CREATE TYPE public.job_status AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'job_type'
                 AND typnamespace = 'public'::regnamespace) THEN
    CREATE TYPE public.job_type AS ENUM ('power_action');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'app_role'
                 AND typnamespace = 'public'::regnamespace) THEN
    CREATE TYPE public.app_role AS ENUM ('admin', 'operator', 'viewer');
  END IF;
END
$$;

-- The app's docs use 'paused' but its enum lacks it (CONTRACT.md section 3).
ALTER TYPE public.job_status ADD VALUE IF NOT EXISTS 'paused';

ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'power_action';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'health_check';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'test_credentials';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'discovery_scan';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'firmware_update';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'full_server_update';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'firmware_inventory_scan';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'scp_export';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'scp_import';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'virtual_media_mount';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'virtual_media_unmount';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'boot_configuration';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'bios_config_read';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'bios_config_write';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'fetch_event_logs';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'idrac_network_read';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'idrac_network_write';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'vcenter_sync';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'openmanage_sync';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'vcenter_connectivity_test';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'cluster_safety_check';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'prepare_host_for_update';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'verify_host_after_update';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'rolling_cluster_update';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'esxi_preflight_check';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'esxi_upgrade';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'run_replication_sync';
ALTER TYPE public.job_type ADD VALUE IF NOT EXISTS 'test_replication_pair';

-- ---------------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.user_roles (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL,
  role public.app_role NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, role)
);

CREATE TABLE IF NOT EXISTS public.api_tokens (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid,
  name text NOT NULL,
  token_hash text NOT NULL UNIQUE,          -- hex sha256 of the plaintext token
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  expires_at timestamptz
);

CREATE TABLE IF NOT EXISTS public.credential_sets (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  description text,
  username text NOT NULL,
  password_encrypted text,
  credential_type text NOT NULL DEFAULT 'idrac' CHECK (credential_type IN ('idrac', 'esxi')),
  priority integer NOT NULL DEFAULT 100,
  is_default boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.credential_ip_ranges (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  credential_set_id uuid NOT NULL REFERENCES public.credential_sets (id) ON DELETE CASCADE,
  ip_range text NOT NULL,
  description text,
  priority integer NOT NULL DEFAULT 100,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.vcenters (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  host text NOT NULL,
  port integer NOT NULL DEFAULT 443,
  username text,
  password_encrypted text,
  verify_ssl boolean NOT NULL DEFAULT true,
  sync_enabled boolean NOT NULL DEFAULT true,
  sync_interval_minutes integer,
  last_sync timestamptz,
  last_sync_status text CHECK (last_sync_status IS NULL OR last_sync_status IN ('success', 'partial', 'failed')),
  last_sync_error text,
  is_primary boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.vcenter_clusters (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  vcenter_id uuid REFERENCES public.vcenters (id) ON DELETE CASCADE,
  source_vcenter_id text,
  cluster_name text NOT NULL,
  datacenter text,
  host_count integer,
  vm_count integer,
  ha_enabled boolean,
  drs_enabled boolean,
  drs_automation_level text,
  overall_status text,
  total_cpu_mhz bigint,
  used_cpu_mhz bigint,
  total_memory_bytes bigint,
  used_memory_bytes bigint,
  total_storage_bytes bigint,
  used_storage_bytes bigint,
  last_sync timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (vcenter_id, cluster_name)
);

CREATE TABLE IF NOT EXISTS public.vcenter_hosts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  vcenter_id uuid REFERENCES public.vcenters (id) ON DELETE SET NULL,
  source_vcenter_id text,
  name text NOT NULL,
  cluster text,
  serial_number text,
  server_id uuid,
  esxi_version text,
  status text,
  maintenance_mode boolean NOT NULL DEFAULT false,
  last_sync timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (vcenter_id, source_vcenter_id)
);

CREATE TABLE IF NOT EXISTS public.servers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  ip_address text NOT NULL UNIQUE,
  service_tag text UNIQUE,
  hostname text,
  model text,
  manufacturer text DEFAULT 'Dell',
  idrac_firmware text,
  bios_version text,
  cpu_count integer,
  memory_gb integer,
  power_state text,
  overall_health text,
  last_seen timestamptz,
  openmanage_device_id text,
  last_openmanage_sync timestamptz,
  vcenter_host_id uuid REFERENCES public.vcenter_hosts (id) ON DELETE SET NULL,
  credential_set_id uuid REFERENCES public.credential_sets (id) ON DELETE SET NULL,
  idrac_username text,
  idrac_password_encrypted text,
  discovered_by_credential_set_id uuid REFERENCES public.credential_sets (id) ON DELETE SET NULL,
  connection_status text CHECK (connection_status IS NULL OR connection_status IN ('online', 'offline', 'unknown')),
  connection_error text,
  last_connection_test timestamptz,
  last_health_check timestamptz,
  requires_legacy_ssl boolean NOT NULL DEFAULT false,
  notes text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Columns the on-prem agent writes that an older DSM database may lack.
ALTER TABLE public.servers ADD COLUMN IF NOT EXISTS credential_test_status text;
ALTER TABLE public.servers ADD COLUMN IF NOT EXISTS credential_last_tested timestamptz;
ALTER TABLE public.servers ADD COLUMN IF NOT EXISTS requires_legacy_ssl boolean NOT NULL DEFAULT false;

DO $$
BEGIN
  -- vcenter_hosts.server_id -> servers.id (added after both tables exist; guarded by name).
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'vcenter_hosts_server_id_fkey'
                 AND conrelid = 'public.vcenter_hosts'::regclass) THEN
    ALTER TABLE public.vcenter_hosts ADD CONSTRAINT vcenter_hosts_server_id_fkey
      FOREIGN KEY (server_id) REFERENCES public.servers (id) ON DELETE SET NULL;
  END IF;
END
$$;

CREATE TABLE IF NOT EXISTS public.vcenter_vms (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  vcenter_id uuid REFERENCES public.vcenters (id) ON DELETE CASCADE,
  source_vcenter_id text,
  name text NOT NULL,
  host_id uuid REFERENCES public.vcenter_hosts (id) ON DELETE SET NULL,
  cluster_name text,
  power_state text,
  guest_os text,
  cpu_count integer,
  memory_mb integer,
  disk_gb numeric,
  ip_address text,
  tools_status text,
  overall_status text,
  notes text,
  last_sync timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (vcenter_id, source_vcenter_id)
);

CREATE TABLE IF NOT EXISTS public.vcenter_datastores (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  vcenter_id uuid REFERENCES public.vcenters (id) ON DELETE CASCADE,
  source_vcenter_id text,
  name text NOT NULL,
  type text,
  capacity_bytes bigint,
  free_bytes bigint,
  accessible boolean,
  host_count integer,
  vm_count integer,
  last_sync timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (vcenter_id, source_vcenter_id)
);

CREATE TABLE IF NOT EXISTS public.jobs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  job_type public.job_type NOT NULL,
  status public.job_status NOT NULL DEFAULT 'pending',
  target_scope jsonb,
  details jsonb,
  created_by uuid,
  schedule_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  completed_at timestamptz,
  parent_job_id uuid REFERENCES public.jobs (id) ON DELETE CASCADE,
  component_order integer,
  credential_set_ids uuid[],
  priority text DEFAULT 'normal' CHECK (priority IS NULL OR priority IN ('low', 'normal', 'high', 'critical')),
  notes text
);
CREATE INDEX IF NOT EXISTS jobs_status_created_idx ON public.jobs (status, created_at);

CREATE TABLE IF NOT EXISTS public.job_tasks (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  job_id uuid NOT NULL REFERENCES public.jobs (id) ON DELETE CASCADE,
  server_id uuid REFERENCES public.servers (id) ON DELETE SET NULL,
  vcenter_host_id uuid REFERENCES public.vcenter_hosts (id) ON DELETE SET NULL,
  status public.job_status NOT NULL DEFAULT 'pending',
  progress integer CHECK (progress IS NULL OR (progress >= 0 AND progress <= 100)),
  log text,
  started_at timestamptz,
  completed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_tasks_job_id_idx ON public.job_tasks (job_id);

CREATE TABLE IF NOT EXISTS public.workflow_executions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  job_id uuid NOT NULL REFERENCES public.jobs (id) ON DELETE CASCADE,
  workflow_type text NOT NULL,
  cluster_id text,
  host_id uuid,
  server_id uuid,
  step_number integer NOT NULL,
  step_name text NOT NULL,
  step_status text NOT NULL DEFAULT 'pending'
    CHECK (step_status IN ('pending', 'running', 'completed', 'failed', 'skipped')),
  step_started_at timestamptz,
  step_completed_at timestamptz,
  step_details jsonb,
  step_error text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS workflow_executions_job_id_idx ON public.workflow_executions (job_id);

CREATE TABLE IF NOT EXISTS public.executor_heartbeats (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  executor_id text NOT NULL UNIQUE,
  hostname text,
  ip_address text,
  version text,
  capabilities jsonb,
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  poll_count bigint NOT NULL DEFAULT 0,
  jobs_processed bigint NOT NULL DEFAULT 0,
  startup_time timestamptz,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.activity_settings (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  encryption_key text,
  pause_idrac_operations boolean NOT NULL DEFAULT false,
  idrac_max_concurrent integer NOT NULL DEFAULT 4,
  idrac_request_delay_ms integer NOT NULL DEFAULT 0,
  discovery_max_threads integer NOT NULL DEFAULT 5,
  stale_running_hours integer NOT NULL DEFAULT 24,
  log_retention_days integer NOT NULL DEFAULT 30,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.openmanage_settings (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  host text NOT NULL,
  port integer NOT NULL DEFAULT 443,
  username text NOT NULL,
  password text,
  verify_ssl boolean NOT NULL DEFAULT true,
  sync_enabled boolean NOT NULL DEFAULT false,
  last_sync timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.idrac_commands (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  server_id uuid REFERENCES public.servers (id) ON DELETE SET NULL,
  job_id uuid REFERENCES public.jobs (id) ON DELETE SET NULL,
  task_id uuid,
  command_type text NOT NULL,
  endpoint text,
  full_url text,
  request_headers jsonb,
  request_body jsonb,
  status_code integer,
  response_time_ms integer,
  response_body jsonb,
  success boolean NOT NULL DEFAULT false,
  error_message text,
  initiated_by uuid,
  source text,
  operation_type text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idrac_commands_job_id_idx ON public.idrac_commands (job_id);

-- ---------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------

-- Base64 of pgcrypto encrypt(data, key, 'aes') = AES-256-CBC, zero IV, PKCS#7 (CONTRACT.md 5).
-- search_path includes "extensions" because Supabase installs pgcrypto there.
CREATE OR REPLACE FUNCTION public.encrypt_password(password text, key text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, extensions, pg_temp
AS $fn$
BEGIN
  IF password IS NULL OR key IS NULL THEN
    RETURN NULL;
  END IF;
  RETURN encode(encrypt(convert_to(password, 'UTF8'), decode(key, 'base64'), 'aes'), 'base64');
END
$fn$;

-- NULL on any failure (wrong key, corrupt data), never an exception.
CREATE OR REPLACE FUNCTION public.decrypt_password(encrypted text, key text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, extensions, pg_temp
AS $fn$
BEGIN
  IF encrypted IS NULL OR key IS NULL THEN
    RETURN NULL;
  END IF;
  RETURN convert_from(decrypt(decode(encrypted, 'base64'), decode(key, 'base64'), 'aes'), 'UTF8');
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END
$fn$;

-- Atomic append to details->'console_log' in ONE UPDATE (row lock), coalescing NULL details,
-- so concurrent writers never lose each other's lines (CONTRACT.md section 7).
CREATE OR REPLACE FUNCTION public.append_job_console_log(p_job_id uuid, p_log_entry text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
  UPDATE public.jobs
     SET details = jsonb_set(
           COALESCE(details, '{}'::jsonb),
           '{console_log}',
           CASE WHEN jsonb_typeof(details -> 'console_log') = 'array'
                THEN details -> 'console_log' ELSE '[]'::jsonb END
             || jsonb_build_array(p_log_entry))
   WHERE id = p_job_id;
$fn$;

-- ---------------------------------------------------------------------------------------------
-- Privileges: our functions run for service_role only (Supabase grants EXECUTE on public
-- functions to anon and authenticated by default). Tables: everything for service_role; nothing
-- is granted to anon here.
-- ---------------------------------------------------------------------------------------------
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      RAISE EXCEPTION 'role % is missing: apply the Supabase roles first (lab: lab/backend/bootstrap.sql)', r;
    END IF;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION public.encrypt_password(text, text) FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.decrypt_password(text, text) FROM PUBLIC, anon, authenticated;
REVOKE ALL ON FUNCTION public.append_job_console_log(uuid, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.encrypt_password(text, text) TO service_role;
GRANT EXECUTE ON FUNCTION public.decrypt_password(text, text) TO service_role;
GRANT EXECUTE ON FUNCTION public.append_job_console_log(uuid, text) TO service_role;

GRANT USAGE ON SCHEMA public TO service_role;
GRANT ALL ON TABLE
  public.user_roles, public.api_tokens, public.credential_sets, public.credential_ip_ranges,
  public.vcenters, public.vcenter_clusters, public.vcenter_hosts, public.servers, public.vcenter_vms,
  public.vcenter_datastores, public.jobs, public.job_tasks, public.workflow_executions,
  public.executor_heartbeats, public.activity_settings, public.openmanage_settings,
  public.idrac_commands
TO service_role;
