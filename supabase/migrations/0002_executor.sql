-- 0002_executor.sql: what the on-prem job executor needs on top of the DSM schema (0001).
--
-- Atomic claims (FOR UPDATE SKIP LOCKED, as procrastinate, Oban and River do), leases with a claim
-- token, token-guarded progress/log/finish writes, stale-lease rescue (fail, never re-run: DSM jobs
-- touch hardware and are not idempotent in general), and per-server locks (one job at a time per
-- server, across executors). The executor reaches all of it over PostgREST RPC with the
-- service-role key; every function here is executable by service_role only.
--
-- Idempotent: ADD COLUMN IF NOT EXISTS, CREATE ... IF NOT EXISTS, CREATE OR REPLACE FUNCTION, and
-- DROP FUNCTION IF EXISTS for the signatures earlier versions of this file created. Applying it twice
-- changes nothing. Requires 0001_dsm_schema.sql (jobs, job_tasks, job_status with 'paused').
--
-- Exactly-once writes: every guarded write carries a per-claim sequence number (p_seq). The row
-- remembers the last one applied (jobs.claim_seq, job_tasks.executor_seq), so a batch re-sent after
-- an ambiguous failure (timeout after the commit) is recognised and not applied twice.
--
-- Paused jobs: a running job the UI sets to 'paused' is stopped like a cancel by its executor, which
-- runs the handler's cleanup, records the step (details.paused_step) and releases the claim
-- (executor_release_paused_job): the status stays 'paused'; setting it back to 'pending' runs it
-- again from the start (its preflight checks what is already done).
--
-- Step rows: the executor writes one workflow_executions row per step of a job
-- (executor_upsert_steps, schema version 4); a job failed as stale or ended while a step was still
-- open gets that step closed as failed.

ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS executor_id text;
ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS claim_token uuid;
ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;
ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS claim_seq bigint;
ALTER TABLE public.job_tasks ADD COLUMN IF NOT EXISTS executor_seq bigint;

-- Signatures of earlier versions of this file (replaced below by ones with p_seq).
DROP FUNCTION IF EXISTS public.executor_update_job(uuid, uuid, jsonb, text[], integer, boolean);
DROP FUNCTION IF EXISTS public.executor_finish_job(uuid, uuid, text, jsonb, text[], integer);
DROP FUNCTION IF EXISTS public.executor_upsert_task(uuid, uuid, uuid, uuid, text, integer, text, boolean);

-- The claim scans pending jobs in (priority, created_at) order; the rescue scans running leases.
CREATE INDEX IF NOT EXISTS jobs_pending_claim_idx ON public.jobs (created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS jobs_running_lease_idx ON public.jobs (lease_expires_at) WHERE status = 'running';

-- One row per server currently worked on. A lock is free when its holder job is no longer running
-- under the same claim token (finished, cancelled, failed as stale): no cleanup is ever required.
CREATE TABLE IF NOT EXISTS public.executor_server_locks (
  server_id uuid PRIMARY KEY,
  job_id uuid NOT NULL,
  claim_token uuid NOT NULL,
  executor_id text,
  acquired_at timestamptz NOT NULL DEFAULT now()
);

-- Schema marker: `job-executor.py --check` calls it to prove this file is applied.
CREATE OR REPLACE FUNCTION public.executor_schema_version()
RETURNS integer
LANGUAGE sql
STABLE
AS $fn$ SELECT 4 $fn$;

-- Keep the last p_max elements of a jsonb array (console_log stays bounded); non-arrays become [].
CREATE OR REPLACE FUNCTION public.executor_jsonb_tail(p_arr jsonb, p_max integer)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
AS $fn$
  SELECT CASE
    WHEN jsonb_typeof(p_arr) IS DISTINCT FROM 'array' THEN '[]'::jsonb
    WHEN p_max IS NULL OR jsonb_array_length(p_arr) <= p_max THEN p_arr
    ELSE (SELECT COALESCE(jsonb_agg(e ORDER BY i), '[]'::jsonb)
            FROM jsonb_array_elements(p_arr) WITH ORDINALITY AS t(e, i)
           WHERE i > jsonb_array_length(p_arr) - p_max)
  END
$fn$;

-- details || patch, with log lines appended to console_log (bounded), in ONE expression so that the
-- UPDATE's row lock makes it atomic: concurrent writers never lose each other's keys or lines.
CREATE OR REPLACE FUNCTION public.executor_merge_details(
  p_details jsonb, p_patch jsonb, p_log_lines text[], p_max_log integer)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
AS $fn$
  SELECT CASE WHEN p_log_lines IS NULL OR cardinality(p_log_lines) = 0
    THEN COALESCE(p_details, '{}'::jsonb) || COALESCE(p_patch, '{}'::jsonb)
    ELSE COALESCE(p_details, '{}'::jsonb) || COALESCE(p_patch, '{}'::jsonb)
         || jsonb_build_object('console_log', public.executor_jsonb_tail(
              CASE WHEN jsonb_typeof(p_details -> 'console_log') = 'array'
                   THEN p_details -> 'console_log' ELSE '[]'::jsonb END || to_jsonb(p_log_lines),
              p_max_log))
  END
$fn$;

-- Claim up to p_limit runnable jobs of the given types for an executor. Runnable: pending,
-- schedule_at NULL or past by the DATABASE clock, type in p_job_types, and (for the common
-- target_scope.server_ids shape) no running job on one of its servers. Order: priority
-- (critical, high, normal, low), then created_at. SKIP LOCKED lets concurrent claimers pass each
-- other without waiting and without ever taking the same row.
CREATE OR REPLACE FUNCTION public.executor_claim_jobs(
  p_executor_id text, p_job_types text[], p_limit integer DEFAULT 1, p_lease_seconds integer DEFAULT 60)
RETURNS SETOF public.jobs
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
  WITH busy AS (
    SELECT DISTINCT s.server_id
      FROM public.jobs r,
           LATERAL jsonb_array_elements_text(r.target_scope -> 'server_ids') AS s(server_id)
     WHERE r.status = 'running' AND jsonb_typeof(r.target_scope -> 'server_ids') = 'array'
  ), candidate AS (
    SELECT j.id
      FROM public.jobs j
     WHERE j.status = 'pending'
       AND (j.schedule_at IS NULL OR j.schedule_at <= now())
       AND j.job_type::text = ANY (p_job_types)
       AND NOT (jsonb_typeof(j.target_scope -> 'server_ids') = 'array'
                AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(j.target_scope -> 'server_ids') AS x(sid)
                             JOIN busy ON busy.server_id = x.sid))
     ORDER BY CASE j.priority WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'low' THEN 3 ELSE 2 END,
              j.created_at, j.id
     LIMIT GREATEST(p_limit, 0)
     FOR UPDATE OF j SKIP LOCKED
  ), claimed AS (
  UPDATE public.jobs AS j
     SET status = 'running',
         started_at = now(),
         completed_at = NULL,
         executor_id = p_executor_id,
         claim_token = gen_random_uuid(),
         claim_seq = 0,
         claimed_at = now(),
         lease_expires_at = now() + make_interval(secs => p_lease_seconds),
         details = public.executor_merge_details(
           j.details,
           jsonb_build_object('executor_id', p_executor_id, 'current_step', 'claimed',
                              'progress_percent', 0, 'phase', 'validate'),
           ARRAY['[' || to_char(now() AT TIME ZONE 'UTC', 'HH24:MI:SS') || '] [INFO] claimed by '
                 || p_executor_id],
           NULL)
    FROM candidate
   WHERE j.id = candidate.id
  RETURNING j.*
  ), reset_tasks AS (  -- a new claim numbers its task writes from 1 again
    UPDATE public.job_tasks AS t SET executor_seq = NULL
      FROM claimed WHERE t.job_id = claimed.id AND t.executor_seq IS NOT NULL
  )
  SELECT * FROM claimed
$fn$;

-- Extend the leases of the given claims ([{"job_id":..,"claim_token":..}]) and report each job's
-- state, so the executor learns in the same call that a job was cancelled or taken from it.
CREATE OR REPLACE FUNCTION public.executor_renew_leases(
  p_executor_id text, p_claims jsonb, p_lease_seconds integer DEFAULT 60)
RETURNS TABLE (job_id uuid, status text, owned boolean, graceful_cancel boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
  UPDATE public.jobs j
     SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    FROM jsonb_to_recordset(COALESCE(p_claims, '[]'::jsonb)) AS c(job_id uuid, claim_token uuid)
   WHERE j.id = c.job_id AND j.claim_token = c.claim_token
     AND (j.status = 'running' OR (j.status IN ('cancelled', 'paused') AND j.completed_at IS NULL))
     AND j.executor_id = p_executor_id;  -- a cancelled job's cleanup keeps its lease (stale rescue)
  RETURN QUERY SELECT * FROM public.executor_job_states(p_claims);
END
$fn$;

-- The current state of the given claims (read only): status, whether the claim is still ours,
-- details.graceful_cancel. A job that no longer exists is reported as status 'missing'.
CREATE OR REPLACE FUNCTION public.executor_job_states(p_claims jsonb)
RETURNS TABLE (job_id uuid, status text, owned boolean, graceful_cancel boolean)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
  SELECT c.job_id,
         COALESCE(j.status::text, 'missing'),
         COALESCE(j.claim_token = c.claim_token, false),
         COALESCE((j.details ->> 'graceful_cancel')::boolean, false)
    FROM jsonb_to_recordset(COALESCE(p_claims, '[]'::jsonb)) AS c(job_id uuid, claim_token uuid)
    LEFT JOIN public.jobs j ON j.id = c.job_id
$fn$;

-- Progress, step and log lines of a running job, guarded by its claim token. Returns false (and
-- changes nothing) when the job is no longer running under that token. p_allow_cancelled lets the
-- owner annotate a job the UI cancelled or paused (its cleanup log, the step it stopped in); the
-- status itself never changes here. p_seq: the batch's sequence number under this claim; a batch
-- already applied (p_seq <= claim_seq) returns true without being applied again.
CREATE OR REPLACE FUNCTION public.executor_update_job(
  p_job_id uuid, p_claim_token uuid, p_patch jsonb DEFAULT NULL, p_log_lines text[] DEFAULT NULL,
  p_max_log integer DEFAULT 500, p_allow_cancelled boolean DEFAULT false, p_seq bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
  v_seq bigint;
BEGIN
  SELECT claim_seq INTO v_seq FROM public.jobs
   WHERE id = p_job_id AND claim_token = p_claim_token
     AND (status = 'running' OR (p_allow_cancelled AND status IN ('cancelled', 'paused')))
   FOR UPDATE;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  IF p_seq IS NOT NULL AND v_seq IS NOT NULL AND p_seq <= v_seq THEN
    RETURN true;  -- a re-sent batch: applied already
  END IF;
  UPDATE public.jobs
     SET details = public.executor_merge_details(details, p_patch, p_log_lines, p_max_log),
         claim_seq = COALESCE(p_seq, claim_seq)
   WHERE id = p_job_id;
  RETURN true;
END
$fn$;

-- End a job we own: p_status completed | failed | cancelled. Guarded by the claim token; a running
-- job takes p_status, a job the UI already cancelled stays cancelled (only annotated, once:
-- completed_at marks that). Any other terminal state is never touched. Clears the lease. A re-sent
-- call (p_seq <= claim_seq on a finished job) returns the stored status without writing again.
CREATE OR REPLACE FUNCTION public.executor_finish_job(
  p_job_id uuid, p_claim_token uuid, p_status text, p_patch jsonb DEFAULT NULL,
  p_log_lines text[] DEFAULT NULL, p_max_log integer DEFAULT 500, p_seq bigint DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
  v_status text;
BEGIN
  IF p_status NOT IN ('completed', 'failed', 'cancelled') THEN
    RAISE EXCEPTION 'executor_finish_job: bad status %', p_status USING ERRCODE = '22023';
  END IF;
  UPDATE public.jobs
     SET status = CASE WHEN status = 'running' THEN p_status::public.job_status ELSE status END,
         completed_at = COALESCE(completed_at, now()),
         lease_expires_at = NULL,
         claim_seq = COALESCE(p_seq, claim_seq),
         details = public.executor_merge_details(details, p_patch, p_log_lines, p_max_log)
   WHERE id = p_job_id AND claim_token = p_claim_token
     AND (status = 'running' OR (status = 'cancelled' AND completed_at IS NULL))
  RETURNING status::text INTO v_status;
  IF v_status IS NULL AND p_seq IS NOT NULL THEN
    SELECT status::text INTO v_status FROM public.jobs
     WHERE id = p_job_id AND claim_token = p_claim_token AND claim_seq >= p_seq
       AND completed_at IS NOT NULL;
  END IF;
  IF v_status IS NOT NULL THEN
    -- No step stays open after the end (also on a re-sent call): a step whose thread is stuck in a
    -- blocking call ends failed with the reason; on a completed job its end was never recorded.
    UPDATE public.workflow_executions
       SET step_status = 'failed', step_completed_at = now(),
           step_error = CASE WHEN v_status = 'completed' THEN 'step end not recorded'
                             ELSE COALESCE(p_patch ->> 'error', 'job ' || v_status || ' during this step')
                        END
     WHERE job_id = p_job_id AND step_status IN ('pending', 'running');
  END IF;
  RETURN v_status;  -- NULL: not ours any more, nothing written
END
$fn$;

-- Release a job the UI paused while we ran it: annotate it (step, cleanup log) and give up the
-- claim (token and lease cleared); the status stays 'paused'. Returns 'paused', or NULL when the
-- job is not paused under this token (nothing written).
CREATE OR REPLACE FUNCTION public.executor_release_paused_job(
  p_job_id uuid, p_claim_token uuid, p_patch jsonb DEFAULT NULL, p_log_lines text[] DEFAULT NULL,
  p_max_log integer DEFAULT 500)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
  v_status text;
BEGIN
  UPDATE public.jobs
     SET claim_token = NULL,
         lease_expires_at = NULL,
         details = public.executor_merge_details(details, p_patch, p_log_lines, p_max_log)
   WHERE id = p_job_id AND claim_token = p_claim_token AND status = 'paused'
  RETURNING status::text INTO v_status;
  IF v_status IS NOT NULL THEN  -- a resumed job starts new step rows; these ones end here
    UPDATE public.workflow_executions
       SET step_status = 'failed', step_completed_at = now(), step_error = 'job paused during this step'
     WHERE job_id = p_job_id AND step_status IN ('pending', 'running');
  END IF;
  RETURN v_status;
END
$fn$;

-- Rescue: fail running jobs whose lease expired (their executor died), keeping step and logs, with
-- the reason. Never re-queues them. A live lease is never touched, whoever holds it: two processes
-- may share an executor id (a daemon and a hand-run --once), and neither may fail the other's jobs.
-- With p_own_only (called once at start-up) only p_executor_id's expired jobs are failed, with the
-- "restarted" reason. Returns the jobs it failed. The open step rows of a cancelled or paused job
-- whose executor died during its cleanup (lease expired, not finished) end as failed too.
CREATE OR REPLACE FUNCTION public.executor_fail_stale_jobs(
  p_executor_id text, p_own_only boolean DEFAULT false, p_max_log integer DEFAULT 500)
RETURNS TABLE (job_id uuid, executor_id text, step text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH stale AS (
    SELECT j.id
      FROM public.jobs j
     WHERE j.status = 'running' AND j.claim_token IS NOT NULL
       AND j.lease_expires_at < now()
       AND (NOT p_own_only OR j.executor_id = p_executor_id)
     FOR UPDATE OF j SKIP LOCKED
  ), msg AS (
    SELECT j.id,
           j.executor_id AS ex,
           COALESCE(j.details ->> 'current_step', 'unknown') AS st,
           CASE WHEN p_own_only
                THEN format('executor %s restarted while the job was running (during step %s)',
                            j.executor_id, COALESCE(j.details ->> 'current_step', 'unknown'))
                ELSE format('executor %s stopped responding during step %s',
                            j.executor_id, COALESCE(j.details ->> 'current_step', 'unknown'))
           END AS m
      FROM public.jobs j JOIN stale ON stale.id = j.id
  ), steps AS (  -- the step rows the dead executor left running end as failed, with the reason
    UPDATE public.workflow_executions AS w
       SET step_status = 'failed', step_completed_at = now(), step_error = msg.m
      FROM msg
     WHERE w.job_id = msg.id AND w.step_status IN ('pending', 'running')
  ), idle_steps AS (  -- a job cancelled or paused in the UI whose executor died during cleanup:
    -- the job keeps its status, its open step rows end as failed (nobody will close them)
    UPDATE public.workflow_executions AS w
       SET step_status = 'failed', step_completed_at = now(),
           step_error = format('executor %s stopped responding while the job was being %s',
                               j.executor_id, j.status::text)
      FROM public.jobs j
     WHERE w.job_id = j.id AND w.step_status IN ('pending', 'running')
       AND j.status IN ('cancelled', 'paused') AND j.completed_at IS NULL
       AND j.claim_token IS NOT NULL AND j.lease_expires_at < now()
       AND (NOT p_own_only OR j.executor_id = p_executor_id)
  )
  UPDATE public.jobs AS j
     SET status = 'failed',
         completed_at = now(),
         lease_expires_at = NULL,
         details = public.executor_merge_details(
           j.details,
           jsonb_build_object('error', msg.m, 'failed_step', msg.st,
                              'phase', COALESCE(j.details ->> 'phase', 'execute'),
                              'retry_safe', COALESCE((j.details ->> 'step_retry_safe')::boolean, false),
                              'failed_by', p_executor_id),
           ARRAY['[' || to_char(now() AT TIME ZONE 'UTC', 'HH24:MI:SS') || '] [ERROR] ' || msg.m
                 || ' (marked failed by ' || p_executor_id || ')'],
           p_max_log)
    FROM msg
   WHERE j.id = msg.id
  RETURNING j.id, msg.ex, msg.st;
END
$fn$;

-- Create or update the job_tasks row of one target of a job we own (found by task id, else by
-- (job_id, server_id), else inserted). Log text is appended and bounded to the last 64 KiB.
-- Returns the task id, or NULL when the job is no longer ours. p_seq: the write's sequence number
-- for this task; a re-sent write (p_seq <= executor_seq) is not applied again.
CREATE OR REPLACE FUNCTION public.executor_upsert_task(
  p_job_id uuid, p_claim_token uuid, p_server_id uuid, p_task_id uuid DEFAULT NULL,
  p_status text DEFAULT NULL, p_progress integer DEFAULT NULL, p_log text DEFAULT NULL,
  p_allow_cancelled boolean DEFAULT false, p_seq bigint DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
  v_id uuid;
BEGIN
  PERFORM 1 FROM public.jobs
    WHERE id = p_job_id AND claim_token = p_claim_token
      AND (status = 'running' OR (p_allow_cancelled AND status IN ('cancelled', 'paused')))
    FOR SHARE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  v_id := p_task_id;
  IF v_id IS NULL THEN
    SELECT t.id INTO v_id FROM public.job_tasks t
     WHERE t.job_id = p_job_id AND t.server_id IS NOT DISTINCT FROM p_server_id
     ORDER BY t.created_at LIMIT 1;
  END IF;
  IF v_id IS NULL THEN
    INSERT INTO public.job_tasks (job_id, server_id, status)
    VALUES (p_job_id, p_server_id, 'pending') RETURNING id INTO v_id;
  END IF;
  UPDATE public.job_tasks
     SET status = COALESCE(p_status::public.job_status, status),
         progress = COALESCE(LEAST(GREATEST(p_progress, 0), 100), progress),
         log = CASE WHEN p_log IS NULL THEN log ELSE right(COALESCE(log, '') || p_log, 65536) END,
         started_at = CASE WHEN p_status = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,
         completed_at = CASE WHEN p_status IN ('completed', 'failed', 'cancelled')
                             THEN COALESCE(completed_at, now()) ELSE completed_at END,
         executor_seq = COALESCE(p_seq, executor_seq)
   WHERE id = v_id AND job_id = p_job_id
     AND (p_seq IS NULL OR executor_seq IS NULL OR executor_seq < p_seq);
  RETURN v_id;
END
$fn$;

-- Step rows (workflow_executions) of a job we own, in order: p_steps is a JSON array of rows, each
-- with a client-made id. A new id is inserted; a known id is updated (running -> completed|failed|
-- skipped) only while its stored status is still pending or running, so a re-sent write changes
-- nothing and an old write never undoes a newer one. Returns false (nothing written) when the job
-- is not ours any more; p_allow_cancelled lets the owner close the steps of a job the UI cancelled
-- or paused. Schema version 4.
CREATE OR REPLACE FUNCTION public.executor_upsert_steps(
  p_job_id uuid, p_claim_token uuid, p_steps jsonb, p_allow_cancelled boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
  s jsonb;
BEGIN
  PERFORM 1 FROM public.jobs
    WHERE id = p_job_id AND claim_token = p_claim_token
      AND (status = 'running'
           OR (p_allow_cancelled AND status IN ('cancelled', 'paused') AND completed_at IS NULL))
    FOR SHARE;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  FOR s IN SELECT e FROM jsonb_array_elements(
             CASE WHEN jsonb_typeof(p_steps) = 'array' THEN p_steps ELSE '[]'::jsonb END)
             WITH ORDINALITY AS t(e, i) ORDER BY i LOOP
    INSERT INTO public.workflow_executions AS w
      (id, job_id, workflow_type, step_number, step_name, step_status, step_started_at,
       step_completed_at, step_details, step_error, server_id, host_id, cluster_id)
    VALUES ((s ->> 'id')::uuid, p_job_id, s ->> 'workflow_type', (s ->> 'step_number')::integer,
            s ->> 'step_name', s ->> 'step_status', (s ->> 'step_started_at')::timestamptz,
            (s ->> 'step_completed_at')::timestamptz, s -> 'step_details', s ->> 'step_error',
            (s ->> 'server_id')::uuid, (s ->> 'host_id')::uuid, s ->> 'cluster_id')
    ON CONFLICT (id) DO UPDATE
       SET step_status = EXCLUDED.step_status,
           step_completed_at = COALESCE(EXCLUDED.step_completed_at, w.step_completed_at),
           step_details = COALESCE(w.step_details, '{}'::jsonb) || COALESCE(EXCLUDED.step_details, '{}'::jsonb),
           step_error = COALESCE(EXCLUDED.step_error, w.step_error)
     WHERE w.job_id = p_job_id AND w.step_status IN ('pending', 'running');
  END LOOP;
  RETURN true;
END
$fn$;

-- Take the lock of a server for a job we own. Free when absent, held by the same job, or held by a
-- job that is no longer running under its token. Returns true when we hold it now.
CREATE OR REPLACE FUNCTION public.executor_acquire_server_lock(
  p_server_id uuid, p_job_id uuid, p_claim_token uuid, p_executor_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
BEGIN
  PERFORM 1 FROM public.jobs
    WHERE id = p_job_id AND claim_token = p_claim_token AND status = 'running';
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  INSERT INTO public.executor_server_locks AS l (server_id, job_id, claim_token, executor_id)
  VALUES (p_server_id, p_job_id, p_claim_token, p_executor_id)
  ON CONFLICT (server_id) DO UPDATE
     SET job_id = EXCLUDED.job_id, claim_token = EXCLUDED.claim_token,
         executor_id = EXCLUDED.executor_id, acquired_at = now()
   WHERE l.job_id = EXCLUDED.job_id
      OR NOT EXISTS (SELECT 1 FROM public.jobs h
                      WHERE h.id = l.job_id AND h.claim_token = l.claim_token AND h.status = 'running');
  RETURN FOUND;
END
$fn$;

CREATE OR REPLACE FUNCTION public.executor_release_server_lock(p_server_id uuid, p_job_id uuid)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
  DELETE FROM public.executor_server_locks WHERE server_id = p_server_id AND job_id = p_job_id
$fn$;

-- The executor_heartbeats row of an executor, stamped with the DATABASE clock (the UI compares
-- last_seen_at with its own now()). Returns whether ANOTHER live process wrote this executor id's
-- row within the last 30 s (a different startup_time): two processes sharing one EXECUTOR_ID.
CREATE OR REPLACE FUNCTION public.executor_heartbeat(p_row jsonb)
RETURNS TABLE (other_live boolean, other_hostname text, other_startup_time timestamptz,
               other_seen_seconds_ago double precision)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  v_prev public.executor_heartbeats%ROWTYPE;
  v_start timestamptz := (p_row ->> 'startup_time')::timestamptz;
BEGIN
  SELECT * INTO v_prev FROM public.executor_heartbeats h
   WHERE h.executor_id = p_row ->> 'executor_id' FOR UPDATE;
  INSERT INTO public.executor_heartbeats AS h
    (executor_id, hostname, ip_address, version, capabilities, last_seen_at, poll_count,
     jobs_processed, startup_time, last_error)
  VALUES (p_row ->> 'executor_id', p_row ->> 'hostname', p_row ->> 'ip_address', p_row ->> 'version',
          p_row -> 'capabilities', now(), COALESCE((p_row ->> 'poll_count')::bigint, 0),
          COALESCE((p_row ->> 'jobs_processed')::bigint, 0), v_start, p_row ->> 'last_error')
  ON CONFLICT (executor_id) DO UPDATE
     SET hostname = EXCLUDED.hostname, ip_address = EXCLUDED.ip_address, version = EXCLUDED.version,
         capabilities = EXCLUDED.capabilities, last_seen_at = now(), poll_count = EXCLUDED.poll_count,
         jobs_processed = EXCLUDED.jobs_processed, startup_time = EXCLUDED.startup_time,
         last_error = EXCLUDED.last_error;
  RETURN QUERY SELECT
    (v_prev.executor_id IS NOT NULL AND v_prev.startup_time IS DISTINCT FROM v_start
     AND v_prev.last_seen_at > now() - interval '30 seconds'),
    v_prev.hostname, v_prev.startup_time,
    extract(epoch FROM now() - v_prev.last_seen_at)::double precision;
END
$fn$;

-- Privileges: service_role only (Supabase grants EXECUTE on new functions to PUBLIC by default).
DO $$
DECLARE
  f text;
BEGIN
  FOREACH f IN ARRAY ARRAY[
    'public.executor_schema_version()',
    'public.executor_jsonb_tail(jsonb, integer)',
    'public.executor_merge_details(jsonb, jsonb, text[], integer)',
    'public.executor_claim_jobs(text, text[], integer, integer)',
    'public.executor_renew_leases(text, jsonb, integer)',
    'public.executor_job_states(jsonb)',
    'public.executor_update_job(uuid, uuid, jsonb, text[], integer, boolean, bigint)',
    'public.executor_finish_job(uuid, uuid, text, jsonb, text[], integer, bigint)',
    'public.executor_release_paused_job(uuid, uuid, jsonb, text[], integer)',
    'public.executor_fail_stale_jobs(text, boolean, integer)',
    'public.executor_upsert_task(uuid, uuid, uuid, uuid, text, integer, text, boolean, bigint)',
    'public.executor_heartbeat(jsonb)',
    'public.executor_upsert_steps(uuid, uuid, jsonb, boolean)',
    'public.executor_acquire_server_lock(uuid, uuid, uuid, text)',
    'public.executor_release_server_lock(uuid, uuid)'
  ] LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM anon', f);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM authenticated', f);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
    END IF;
  END LOOP;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT ALL ON TABLE public.executor_server_locks TO service_role;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON TABLE public.executor_server_locks FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON TABLE public.executor_server_locks FROM authenticated;
  END IF;
END
$$;
