-- The checksum S3 reports for an archived object (SHA-256, base64; "<digest>-<parts>" for a
-- multipart upload), as computed before the upload: verification compares the server's to it.
ALTER TABLE strata.archive_catalog ADD COLUMN s3_checksum text;
