DROP TABLE IF EXISTS "sluice_stage";
CREATE TEMP TABLE "sluice_stage" ("id" BIGINT, "tags" SUPER, "addr" SUPER);
COPY "sluice_stage" FROM 's3://lake-bucket/lake/changes/shop/orders/_sluice_redshift/shop.orders-7-1.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-copy' FORMAT AS PARQUET SERIALIZETOJSON MANIFEST;
