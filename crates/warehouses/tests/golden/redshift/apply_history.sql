CREATE TEMP TABLE "sluice_work" AS
SELECT _sluice_v.*, lead(_sluice_v."_sluice_vf") OVER (PARTITION BY _sluice_v."l_orderkey", _sluice_v."l_linenumber" ORDER BY _sluice_v."_sluice_seq") AS "_sluice_vt"
FROM (
  SELECT _sluice_r.*, CASE WHEN _sluice_p."_sluice_last" IS NOT NULL AND _sluice_p."_sluice_last" > _sluice_r."_sluice_t" THEN _sluice_p."_sluice_last" ELSE _sluice_r."_sluice_t" END AS "_sluice_vf"
  FROM (
    SELECT _sluice_s.*, max(COALESCE(_sluice_s."_sluice_source_ts", _sluice_s."_sluice_ingested_at")) OVER (PARTITION BY _sluice_s."l_orderkey", _sluice_s."l_linenumber" ORDER BY _sluice_s."_sluice_seq" ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "_sluice_t"
    FROM "sluice_stage" AS _sluice_s
  ) AS _sluice_r
  LEFT JOIN (
    SELECT _sluice_h."l_orderkey", _sluice_h."l_linenumber", max(COALESCE(_sluice_h."_sluice_valid_to", _sluice_h."_sluice_valid_from")) AS "_sluice_last"
    FROM "tpch"."lineitem" AS _sluice_h
    WHERE EXISTS (SELECT 1 FROM "sluice_stage" AS _sluice_k WHERE _sluice_h."l_orderkey" = _sluice_k."l_orderkey" AND _sluice_h."l_linenumber" = _sluice_k."l_linenumber")
    GROUP BY _sluice_h."l_orderkey", _sluice_h."l_linenumber"
  ) AS _sluice_p ON _sluice_p."l_orderkey" = _sluice_r."l_orderkey" AND _sluice_p."l_linenumber" = _sluice_r."l_linenumber"
) AS _sluice_v;
UPDATE "tpch"."lineitem" SET "_sluice_valid_to" = _sluice_f."_sluice_vf", "_sluice_is_current" = false
FROM (SELECT "l_orderkey", "l_linenumber", min("_sluice_vf") AS "_sluice_vf" FROM "sluice_work" GROUP BY "l_orderkey", "l_linenumber") AS _sluice_f
WHERE "tpch"."lineitem"."l_orderkey" = _sluice_f."l_orderkey" AND "tpch"."lineitem"."l_linenumber" = _sluice_f."l_linenumber" AND "tpch"."lineitem"."_sluice_is_current";
INSERT INTO "tpch"."lineitem" ("l_orderkey", "l_linenumber", "l_quantity", "l_shipdate", "l_comment", "l_big", "l_attrs", "l_blob", "l_updated", "_sluice_truncated", "_sluice_valid_from", "_sluice_valid_to", "_sluice_is_current", "_sluice_seq", "_sluice_source_ts", "_sluice_loaded_at")
SELECT "l_orderkey", "l_linenumber", "l_quantity", "l_shipdate", "l_comment", "l_big", JSON_PARSE("l_attrs"), "l_blob", "l_updated", false, "_sluice_vf", "_sluice_vt", "_sluice_vt" IS NULL, "_sluice_seq", "_sluice_source_ts", CAST('2026-11-23 12:00:00.000000+00' AS TIMESTAMPTZ) FROM "sluice_work" AS _sluice_w WHERE "_sluice_op" <> 'd';
DROP TABLE "sluice_work";
UPDATE _sluice.ledger SET source = CAST($3 AS VARCHAR(256)), source_table = CAST($4 AS VARCHAR(256)), load_mode = CAST($5 AS VARCHAR(256)), lake_version = CAST($6 AS BIGINT), lake_seq = CAST($7 AS BIGINT), changes_loaded = changes_loaded + CAST($8 AS BIGINT), loaded_at = CAST('2026-11-23 12:00:00.000000+00' AS TIMESTAMPTZ) WHERE target_schema = CAST($1 AS VARCHAR(256)) AND target_table = CAST($2 AS VARCHAR(256));
INSERT INTO _sluice.ledger SELECT CAST($1 AS VARCHAR(256)), CAST($2 AS VARCHAR(256)), CAST($3 AS VARCHAR(256)), CAST($4 AS VARCHAR(256)), CAST($5 AS VARCHAR(256)), CAST($6 AS BIGINT), CAST($7 AS BIGINT), CAST($8 AS BIGINT), CAST('2026-11-23 12:00:00.000000+00' AS TIMESTAMPTZ) WHERE NOT EXISTS (SELECT 1 FROM _sluice.ledger WHERE target_schema = CAST($1 AS VARCHAR(256)) AND target_table = CAST($2 AS VARCHAR(256)));
