"""A Supabase-compatible backend for the lab: PostgREST subset, Auth, Edge Functions, on real PostgreSQL.

Start it with `python -m lab.backend --database-url URL --apply-migrations`, or from Python with
`lab.backend.launcher.start_backend()`. See lab/backend/README in the project README.
"""
