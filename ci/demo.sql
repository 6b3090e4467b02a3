-- The pg_trickle demo scenario, run by ci/demo against a fresh database `demo`.
CREATE EXTENSION pg_trickle;

-- What the extension installed: its version and its schemas.
SELECT pgtrickle.version() AS pg_trickle_version;
SELECT nspname AS schema, pg_get_userbyid(nspowner) AS owner
  FROM pg_namespace WHERE nspname LIKE 'pgtrickle%' ORDER BY 1;

-- The SQL API available in this build.
SELECT p.proname || '(' || pg_get_function_arguments(p.oid) || ')' AS function,
       pg_get_function_result(p.oid) AS returns
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pgtrickle' ORDER BY 1;

-- The library is loaded from shared_preload_libraries.
SHOW shared_preload_libraries;
