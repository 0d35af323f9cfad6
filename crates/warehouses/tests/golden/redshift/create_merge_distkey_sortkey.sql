CREATE SCHEMA IF NOT EXISTS "tpch";
CREATE TABLE "tpch"."lineitem" (
  "l_orderkey" BIGINT,
  "l_linenumber" INTEGER,
  "l_quantity" DECIMAL(15,2),
  "l_shipdate" DATE,
  "l_comment" VARCHAR(64),
  "l_big" DECIMAL(20,0),
  "l_attrs" SUPER,
  "l_blob" VARBYTE(1024000),
  "l_updated" TIMESTAMPTZ,
  "_sluice_source_ts" TIMESTAMPTZ,
  "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
  "_sluice_truncated" BOOLEAN NOT NULL DEFAULT false
)
DISTSTYLE KEY
DISTKEY ("l_orderkey")
COMPOUND SORTKEY ("l_shipdate", "l_orderkey")
ENCODE AUTO;