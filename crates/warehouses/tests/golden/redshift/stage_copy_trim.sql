DROP TABLE IF EXISTS "sluice_stage";
CREATE TEMP TABLE "sluice_stage" ("l_orderkey" BIGINT, "l_comment" VARCHAR(65535), "l_attrs" VARCHAR(65535), "l_blob" VARBYTE(1024000), "_sluice_op" VARCHAR(8), "_sluice_seq" BIGINT, "_sluice_source_ts" TIMESTAMPTZ, "_sluice_ingested_at" TIMESTAMPTZ);
COPY "sluice_stage" FROM 's3://lake-bucket/lake/changes/tpch/lineitem/_sluice_redshift/tpch.lineitem-6001215-1.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-copy' FORMAT AS PARQUET MANIFEST;
DELETE FROM "sluice_stage" WHERE "_sluice_seq" <= 1000 OR "_sluice_seq" > 6001215;
