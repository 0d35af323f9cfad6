ALTER TABLE "tpch"."lineitem" ALTER COLUMN "l_comment" TYPE VARCHAR(512);
