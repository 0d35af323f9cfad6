CREATE SCHEMA IF NOT EXISTS "tpch";
CREATE TABLE "tpch"."lineitem_history" (
  "l_orderkey" BIGINT,
  "l_linenumber" INTEGER,
  "l_quantity" DECIMAL(15,2),
  "l_shipdate" DATE,
  "l_comment" VARCHAR(64),
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
INTERLEAVED SORTKEY ("_sluice_valid_from", "l_orderkey")
ENCODE AUTO;
-- distkey l_linenumber (was l_orderkey)
ALTER TABLE "tpch"."lineitem" ALTER DISTKEY "l_linenumber";
-- sortkey (l_shipdate) (was (l_orderkey, l_shipdate))
ALTER TABLE "tpch"."lineitem" ALTER COMPOUND SORTKEY ("l_shipdate");
