CREATE SCHEMA IF NOT EXISTS "tpch";
CREATE TABLE "tpch"."lineitem_history" (
  "l_orderkey" BIGINT ENCODE AZ64,
  "l_linenumber" INTEGER,
  "l_quantity" DECIMAL(15,2),
  "l_shipdate" DATE,
  "l_comment" VARCHAR(64) ENCODE ZSTD,
  "l_big" DECIMAL(20,0),
  "l_attrs" SUPER,
  "l_blob" VARBYTE(1024000),
  "l_updated" TIMESTAMPTZ,
  "_sluice_valid_from" TIMESTAMPTZ NOT NULL,
  "_sluice_valid_to" TIMESTAMPTZ,
  "_sluice_is_current" BOOLEAN NOT NULL,
  "_sluice_seq" BIGINT NOT NULL,
  "_sluice_source_ts" TIMESTAMPTZ,
  "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
  "_sluice_truncated" BOOLEAN NOT NULL DEFAULT false
)
DISTSTYLE EVEN;