-- PLACEHOLDER in branch `edits` only, so migration 0005 has a predecessor:
-- helper "web" provides the real 0004_users_sessions.sql; take web's file.
SELECT 1;
