-- Lab-only bootstrap: what a Supabase project provides and plain PostgreSQL lacks.
-- Never apply this to a real DSM database. Idempotent; roles are cluster-wide, so creation
-- tolerates a concurrent session creating the same role.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- another test session created it a moment ago
      END;
    END IF;
  END LOOP;
END
$$;

-- As in Supabase: the service role bypasses row level security.
DO $$
BEGIN
  ALTER ROLE service_role BYPASSRLS;
EXCEPTION WHEN OTHERS THEN
  NULL;
END
$$;

CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;
GRANT USAGE ON SCHEMA extensions TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- Supabase Auth keeps users in auth.users; the lab keeps its users here (only the server reads it).
CREATE SCHEMA IF NOT EXISTS lab_auth;
REVOKE ALL ON SCHEMA lab_auth FROM PUBLIC;

CREATE TABLE IF NOT EXISTS lab_auth.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE,
  encrypted_password text NOT NULL,          -- bcrypt via pgcrypto crypt()
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  last_sign_in_at timestamptz
);

CREATE TABLE IF NOT EXISTS lab_auth.refresh_tokens (
  token text PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES lab_auth.users (id) ON DELETE CASCADE,
  revoked boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);
