CREATE DATABASE IF NOT EXISTS `lake_shop`;
DROP TABLE IF EXISTS `lake_shop`.`orders__changes`;
CREATE EXTERNAL TABLE `lake_shop`.`orders__changes` (
  `o_orderkey` bigint,
  `o_total` decimal(15,2),
  `o_comment` string,
  `o_attrs` string,
  `o_date` date,
  `Odd "name"` int,
  `_sluice_op` string,
  `_sluice_seq` bigint,
  `_sluice_source_ts` timestamp,
  `_sluice_ingested_at` timestamp
)
PARTITIONED BY (`_sluice_ingest_date` string)
ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'
STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION 's3://lake-bucket/lake/changes/shop/orders/_symlink_format_manifest/';
ALTER TABLE `lake_shop`.`orders__changes` ADD IF NOT EXISTS PARTITION (`_sluice_ingest_date`='2026-12-05') LOCATION 's3://lake-bucket/lake/changes/shop/orders/_symlink_format_manifest/_sluice_ingest_date=2026-12-05/';
ALTER TABLE `lake_shop`.`orders__changes` ADD IF NOT EXISTS PARTITION (`_sluice_ingest_date`='2026-12-06') LOCATION 's3://lake-bucket/lake/changes/shop/orders/_symlink_format_manifest/_sluice_ingest_date=2026-12-06/';
CREATE OR REPLACE VIEW "lake_shop"."orders" AS SELECT "o_orderkey", "o_total", "o_comment", "o_attrs", "o_date", "Odd ""name""", "_sluice_source_ts", "_sluice_seq" FROM (
  SELECT *, row_number() OVER (PARTITION BY "o_orderkey" ORDER BY "_sluice_seq" DESC) AS "__sluice_rn"
  FROM "lake_shop"."orders__changes") AS "__sluice_latest"
WHERE "__sluice_rn" = 1 AND "_sluice_op" <> 'd';
-- left out shop.clicks: column at has type Time64(µs), which an external table cannot declare
