-- The gateway prunes its own ledger: rows older than its retention (STRATA_LEDGER_RETENTION) can no
-- longer be needed to recognise a retried batch.
GRANT DELETE ON strata.ingest_ledger TO strata_ingest;
