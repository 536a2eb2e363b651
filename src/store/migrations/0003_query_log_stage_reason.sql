-- Hedgerow schema 3: each query-log row keeps which stage settled the answer
-- and why (the Decision's stage and reason), so a block found on a CNAME
-- target, an allow override or a stale answer reads as what it was.
-- Rows written before this migration have neither (NULL).
ALTER TABLE query_log ADD COLUMN stage TEXT;
ALTER TABLE query_log ADD COLUMN reason TEXT;
