-- ci/bench.sql — the benchmark's procedures, installed by ci/bench into a fresh database
-- `bench`. Every measured statement runs in its own transaction (the procedures COMMIT between
-- steps) and is timed on the server with clock_timestamp() around the call itself: data
-- generation, the applied change and the commit are outside the measurement. Results go to
-- bench.result; ci/bench prints medians from it.
SET client_min_messages = warning;
CREATE EXTENSION pg_trickle;
CREATE SCHEMA bench;

CREATE TABLE bench.result (
  section text NOT NULL,   -- refresh | idle | cdc | immediate
  shape text NOT NULL,     -- query shape or statement
  n int NOT NULL,          -- source rows
  rate numeric,            -- changed fraction (refresh section)
  kind text NOT NULL,      -- full | diff | auto | plain | watched | immediate
  ms float8 NOT NULL
);

-- How often each AUTO twin chose each mode.
CREATE TABLE bench.auto_choice (shape text NOT NULL, n int NOT NULL, fulls bigint NOT NULL,
                                diffs bigint NOT NULL);

-- The query shapes, in report order. `a` is the large table; `b` has n/100 rows (at
-- least 100), `c` 50.
CREATE TABLE bench.shape (ord int PRIMARY KEY, name text NOT NULL, query text NOT NULL);
INSERT INTO bench.shape VALUES
  (1, 'scan', 'SELECT id, b_id, grp, val FROM a'),
  (2, 'filter', 'SELECT id, val FROM a WHERE val % 10 = 0'),
  (3, 'aggregate', 'SELECT grp, count(*) AS n, sum(val) AS total FROM a GROUP BY grp'),
  (4, 'join', 'SELECT a.id, a.val, b.name FROM a JOIN b ON b.id = a.b_id'),
  (5, 'join+aggregate',
   'SELECT b.region, count(*) AS n, sum(a.val) AS total FROM a JOIN b ON b.id = a.b_id GROUP BY b.region'),
  (6, '3-join+aggregate',
   'SELECT c.name, count(*) AS n, sum(a.val) AS total FROM a JOIN b ON b.id = a.b_id JOIN c ON c.id = b.c_id GROUP BY c.name'),
  -- MIN/MAX are kept in place (a group is rescanned only when a deletion reaches its
  -- extreme); the group key may be NULL (an expression, no index on it).
  -- In this data every row of a group has the same val, so every deletion takes a group's
  -- extreme: each touched group is rescanned, MIN/MAX's worst case.
  (7, 'min/max, nullable key',
   'SELECT nullif(grp, 0) AS g, min(val) AS lo, max(val) AS hi FROM a GROUP BY nullif(grp, 0)'),
  -- Distinct values (ids): a deletion takes a group's extreme about 2 times in 100.
  (8, 'min/max, distinct values',
   'SELECT grp, min(id) AS lo, max(id) AS hi FROM a GROUP BY grp'),
  -- The rows of the partitions a change touches are renumbered (b_id is indexed).
  (9, 'window top-3 per key',
   'SELECT x.b_id, x.id, x.val FROM (SELECT b_id, id, val, row_number() OVER (PARTITION BY b_id ORDER BY val DESC, id) AS rn FROM a) AS x WHERE x.rn <= 3'),
  -- The latest rows: every insertion enters the top, deletions there bring older rows in.
  (10, 'top-10 (ORDER BY … LIMIT)',
   'SELECT id, b_id, val FROM a ORDER BY id DESC LIMIT 10'),
  -- Each changed row expanded again; a keyless result (a bag).
  (11, 'LATERAL unnest',
   'SELECT a.id, u.x FROM a, unnest(ARRAY[a.val, a.grp]) AS u(x)'),
  -- A recursive reachability: each row's ancestors up to three levels, its parent being the
  -- row whose id is its b_id (a set: UNION, delete and re-derive). A changed row changes
  -- its own ancestors and those of the rows below it.
  (12, 'recursive ancestors (3 levels)',
   'WITH RECURSIVE r(id, anc, depth) AS (SELECT id, b_id, 1 FROM a UNION SELECT r.id, p.b_id, r.depth + 1 FROM r JOIN a p ON p.id = r.anc WHERE r.depth < 3) SELECT * FROM r');

CREATE FUNCTION bench.since(t0 timestamptz) RETURNS float8 LANGUAGE sql AS
$$ SELECT extract(epoch FROM clock_timestamp() - t0)::float8 * 1000 $$;

-- Milliseconds, with fewer decimals as they grow.
CREATE FUNCTION bench.fmt(x float8) RETURNS text LANGUAGE sql AS $$
  SELECT CASE WHEN x IS NULL THEN '–'
              WHEN x < 10 THEN to_char(x, 'FM9990.00')
              WHEN x < 1000 THEN to_char(x, 'FM9990.0')
              ELSE to_char(x, 'FM99999990') END $$;

-- Rows of `st` (user columns) that differ from `query`, both ways: a benchmark of a wrong
-- answer is worthless, so every suite checks its stream tables at the end.
CREATE FUNCTION bench.differences(st text, query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  cols text;
  n bigint;
BEGIN
  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
    FROM pg_attribute WHERE attrelid = st::regclass AND attnum > 0 AND NOT attisdropped
     AND attname NOT LIKE '\_\_pgt\_%' AND attname NOT LIKE '\_\_ivm\_%';
  EXECUTE format('SELECT (SELECT count(*) FROM (SELECT %s FROM %s EXCEPT ALL (%s)) x)
                       + (SELECT count(*) FROM ((%s) EXCEPT ALL SELECT %s FROM %s) y)',
                 cols, st, query, query, cols, st) INTO n;
  RETURN n;
END $$;

-- Source tables for the refresh suite: a (n rows), b (n/100, at least 100), c (50).
CREATE PROCEDURE bench.load(n int) LANGUAGE plpgsql AS $$
DECLARE
  nb int := greatest(n / 100, 100);
BEGIN
  PERFORM setseed(0.25);
  DROP TABLE IF EXISTS a, b, c;
  CREATE TABLE c (id int PRIMARY KEY, name text NOT NULL);
  INSERT INTO c SELECT g, 'c' || g FROM generate_series(1, 50) g;
  CREATE TABLE b (id int PRIMARY KEY, c_id int NOT NULL, region int NOT NULL, name text NOT NULL);
  INSERT INTO b SELECT g, 1 + g % 50, g % 10, 'b' || g FROM generate_series(1, nb) g;
  CREATE TABLE a (id bigint PRIMARY KEY, b_id int NOT NULL, grp int NOT NULL, val int NOT NULL,
                  pad text NOT NULL);
  INSERT INTO a SELECT g, 1 + (g::int8 * 7919) % nb, g % 1000, (g::int8 * 31) % 1000, repeat('x', 60)
    FROM generate_series(1, n) g;
  -- Foreign-key-like columns are indexed, as they would be in an application.
  CREATE INDEX ON a (b_id);
  CREATE INDEX ON b (c_id);
  ANALYZE a, b, c;
END $$;

-- The change of one measurement: `rate` × n rows of a, half updated (every fourth of those
-- also moves to another b row and group), a quarter deleted, a quarter inserted; and
-- `rate` × |b| rows of b updated (region, name and c row).
CREATE PROCEDURE bench.change(n int, rate numeric) LANGUAGE plpgsql AS $$
DECLARE
  k int := greatest(1, round(n * rate)::int);
  kb int;
  nb int;
  top bigint;
BEGIN
  SELECT max(id) INTO top FROM a;
  SELECT count(*) INTO nb FROM b;
  kb := round(nb * rate)::int;
  UPDATE a SET val = val + 1,
               b_id = CASE WHEN id % 4 = 0 THEN 1 + (b_id + 6) % nb ELSE b_id END,
               grp = CASE WHEN id % 4 = 0 THEN (grp + 1) % 1000 ELSE grp END
   WHERE id IN (SELECT 1 + (random() * (top - 1))::bigint FROM generate_series(1, k / 2));
  DELETE FROM a
   WHERE id IN (SELECT 1 + (random() * (top - 1))::bigint FROM generate_series(1, k / 4));
  INSERT INTO a SELECT top + g, 1 + (g::int8 * 7919) % nb, g % 1000, g % 1000, repeat('y', 60)
    FROM generate_series(1, k - k / 2 - k / 4) g;
  IF kb > 0 THEN
    UPDATE b SET region = (region + 1) % 10, name = 'b' || id || '.' || floor(random() * 1000),
                 c_id = 1 + c_id % 50
     WHERE id IN (SELECT 1 + (random() * (nb - 1))::int FROM generate_series(1, kb));
  END IF;
END $$;

-- One shape at one size: a DIFFERENTIAL stream table, its FULL twin and its AUTO twin; for
-- every rate and repetition the same change, then the FULL twin's refresh, the AUTO twin's
-- (which chooses from its own history), the DIFFERENTIAL refresh (refreshed last, it pays for
-- cleaning the change buffer) and a refresh with no change.
CREATE PROCEDURE bench.refresh_suite(n int, shape_name text, rates numeric[], reps int)
LANGUAGE plpgsql AS $$
DECLARE
  q text;
  r numeric;
  i int;
  t0 timestamptz;
  bad bigint;
BEGIN
  SELECT query INTO STRICT q FROM bench.shape WHERE name = shape_name;
  PERFORM pgtrickle.create_stream_table('st_diff', q, refresh_mode => 'DIFFERENTIAL');
  PERFORM pgtrickle.create_stream_table('st_full', q, refresh_mode => 'FULL');
  PERFORM pgtrickle.create_stream_table('st_auto', q, refresh_mode => 'AUTO');
  COMMIT;
  -- One unmeasured round first: the backend's caches warm up on it.
  CALL bench.change(n, rates[1]);
  COMMIT;
  PERFORM pgtrickle.refresh_stream_table('st_full');
  COMMIT;
  PERFORM pgtrickle.refresh_stream_table('st_auto');
  COMMIT;
  PERFORM pgtrickle.refresh_stream_table('st_diff');
  COMMIT;
  FOREACH r IN ARRAY rates LOOP
    FOR i IN 1..reps LOOP
      CALL bench.change(n, r);
      COMMIT;
      t0 := clock_timestamp();
      PERFORM pgtrickle.refresh_stream_table('st_full');
      INSERT INTO bench.result VALUES ('refresh', shape_name, n, r, 'full', bench.since(t0));
      COMMIT;
      t0 := clock_timestamp();
      PERFORM pgtrickle.refresh_stream_table('st_auto');
      INSERT INTO bench.result VALUES ('refresh', shape_name, n, r, 'auto', bench.since(t0));
      COMMIT;
      t0 := clock_timestamp();
      PERFORM pgtrickle.refresh_stream_table('st_diff');
      INSERT INTO bench.result VALUES ('refresh', shape_name, n, r, 'diff', bench.since(t0));
      COMMIT;
      t0 := clock_timestamp();
      PERFORM pgtrickle.refresh_stream_table('st_diff');
      INSERT INTO bench.result VALUES ('idle', shape_name, n, NULL, 'diff', bench.since(t0));
      COMMIT;
    END LOOP;
  END LOOP;
  bad := bench.differences('st_diff', q) + bench.differences('st_auto', q);
  IF bad <> 0 THEN
    RAISE EXCEPTION 'bench: % at % rows: the DIFFERENTIAL or AUTO stream table differs from its query in % rows',
      shape_name, n, bad;
  END IF;
  -- What AUTO chose, per rate (the history's latest refreshes, in run order).
  INSERT INTO bench.auto_choice
    SELECT shape_name, n, count(*) FILTER (WHERE h.action = 'FULL'),
           count(*) FILTER (WHERE h.action <> 'FULL')
      FROM pgtrickle.pgt_refresh_history h
     WHERE h.pgt_id = (SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'st_auto')
       AND h.choice IS NOT NULL;
  PERFORM pgtrickle.drop_stream_table('st_auto');
  PERFORM pgtrickle.drop_stream_table('st_diff');
  PERFORM pgtrickle.drop_stream_table('st_full');
  COMMIT;
END $$;

-- Capture overhead: the same statements on two identical tables, one read by a DIFFERENTIAL
-- stream table (capture triggers writing its change buffer), alternating between them.
CREATE PROCEDURE bench.cdc_suite(n int, reps int, singles int) LANGUAGE plpgsql AS $$
DECLARE
  k int := n / 10;
  i int;
  j int;
  id_ bigint;
  t0 timestamptz;
  tbl text;
BEGIN
  PERFORM setseed(0.5);
  DROP TABLE IF EXISTS w_plain, w_watched;
  FOREACH tbl IN ARRAY ARRAY['w_plain', 'w_watched'] LOOP
    EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, b_id int NOT NULL, grp int NOT NULL,
                    val int NOT NULL, pad text NOT NULL)', tbl);
    EXECUTE format('INSERT INTO %I SELECT g, 1 + g %% 1000, g %% 1000, g %% 997, repeat(''x'', 60)
                    FROM generate_series(1, %s) g', tbl, n);
    EXECUTE format('CREATE INDEX ON %I (b_id)', tbl);
    EXECUTE format('ANALYZE %I', tbl);
  END LOOP;
  PERFORM pgtrickle.create_stream_table('w_st', 'SELECT id, b_id, grp, val FROM w_watched',
                                        refresh_mode => 'DIFFERENTIAL');
  COMMIT;
  FOR i IN 0..reps LOOP   -- round 0 warms up and is not recorded
    FOR j IN 0..1 LOOP
      tbl := CASE WHEN (i + j) % 2 = 0 THEN 'w_plain' ELSE 'w_watched' END;
      t0 := clock_timestamp();
      EXECUTE format('INSERT INTO %I SELECT g, 1 + g %% 1000, g %% 1000, g %% 997, repeat(''z'', 60)
                      FROM generate_series(%s, %s) g', tbl, n + 1, n + k);
      IF i > 0 THEN
        INSERT INTO bench.result VALUES ('cdc', 'bulk INSERT (n/10 rows)', n, NULL,
          CASE tbl WHEN 'w_plain' THEN 'plain' ELSE 'watched' END, bench.since(t0));
      END IF;
      COMMIT;
      t0 := clock_timestamp();
      EXECUTE format('UPDATE %I SET val = val + 1 WHERE id BETWEEN %s AND %s', tbl,
                     1 + (i * k) % (n - k), (i * k) % (n - k) + k);
      IF i > 0 THEN
        INSERT INTO bench.result VALUES ('cdc', 'bulk UPDATE (n/10 rows)', n, NULL,
          CASE tbl WHEN 'w_plain' THEN 'plain' ELSE 'watched' END, bench.since(t0));
      END IF;
      COMMIT;
      t0 := clock_timestamp();
      EXECUTE format('DELETE FROM %I WHERE id > %s', tbl, n);
      IF i > 0 THEN
        INSERT INTO bench.result VALUES ('cdc', 'bulk DELETE (n/10 rows)', n, NULL,
          CASE tbl WHEN 'w_plain' THEN 'plain' ELSE 'watched' END, bench.since(t0));
      END IF;
      COMMIT;
    END LOOP;
    -- Empties the change buffer between rounds, as a scheduled refresh would (not measured).
    PERFORM pgtrickle.refresh_stream_table('w_st');
    COMMIT;
  END LOOP;
  -- Single-row statements, each its own transaction; static SQL (cached plans), as an
  -- application with prepared statements would run them.
  FOR i IN 0..singles LOOP
    id_ := 1 + floor(random() * n)::bigint;
    FOR j IN 0..1 LOOP
      IF (i + j) % 2 = 0 THEN
        t0 := clock_timestamp();
        INSERT INTO w_plain VALUES (n + 1 + i, 1, 1, 1, 'single');
        IF i > 0 THEN INSERT INTO bench.result VALUES ('cdc', 'single-row INSERT', n, NULL, 'plain', bench.since(t0)); END IF;
        COMMIT;
        t0 := clock_timestamp();
        UPDATE w_plain SET val = val + 1 WHERE id = id_;
        IF i > 0 THEN INSERT INTO bench.result VALUES ('cdc', 'single-row UPDATE', n, NULL, 'plain', bench.since(t0)); END IF;
        COMMIT;
        t0 := clock_timestamp();
        DELETE FROM w_plain WHERE id = n + 1 + i;
        IF i > 0 THEN INSERT INTO bench.result VALUES ('cdc', 'single-row DELETE', n, NULL, 'plain', bench.since(t0)); END IF;
        COMMIT;
      ELSE
        t0 := clock_timestamp();
        INSERT INTO w_watched VALUES (n + 1 + i, 1, 1, 1, 'single');
        IF i > 0 THEN INSERT INTO bench.result VALUES ('cdc', 'single-row INSERT', n, NULL, 'watched', bench.since(t0)); END IF;
        COMMIT;
        t0 := clock_timestamp();
        UPDATE w_watched SET val = val + 1 WHERE id = id_;
        IF i > 0 THEN INSERT INTO bench.result VALUES ('cdc', 'single-row UPDATE', n, NULL, 'watched', bench.since(t0)); END IF;
        COMMIT;
        t0 := clock_timestamp();
        DELETE FROM w_watched WHERE id = n + 1 + i;
        IF i > 0 THEN INSERT INTO bench.result VALUES ('cdc', 'single-row DELETE', n, NULL, 'watched', bench.since(t0)); END IF;
        COMMIT;
      END IF;
    END LOOP;
  END LOOP;
  PERFORM pgtrickle.refresh_stream_table('w_st');
  IF bench.differences('w_st', 'SELECT id, b_id, grp, val FROM w_watched') <> 0 THEN
    RAISE EXCEPTION 'bench: the capture suite''s stream table differs from its query';
  END IF;
  PERFORM pgtrickle.drop_stream_table('w_st');
  DROP TABLE w_plain, w_watched;
  COMMIT;
END $$;

-- IMMEDIATE: pgbench's accounts ⋈ branches (n accounts, one branch per 100,000) twice, one pair
-- unwatched and one pair read by an IMMEDIATE stream table (with `peer`, a third pair read by a
-- pg_ivm IMMV of the same query); single-row updates of an account balance and 1 % bulk
-- updates (a range of n/100 accounts), rotating between the pairs. Run once with the join
-- itself and once with a per-branch aggregate over it.
CREATE PROCEDURE bench.immediate_suite(n int, reps int, singles int, st_shape text,
                                       peer boolean DEFAULT false)
LANGUAGE plpgsql AS $$
DECLARE
  nbr int := greatest(n / 100000, 1);
  k int := n / 100;
  kinds text[] := CASE WHEN peer THEN ARRAY['plain', 'imm', 'ivm'] ELSE ARRAY['plain', 'imm'] END;
  nk int := CASE WHEN peer THEN 3 ELSE 2 END;
  q text;
  i int;
  j int;
  aid_ int;
  lo int;
  t0 timestamptz;
  s text;
  kind text;
BEGIN
  PERFORM setseed(0.75);
  DROP TABLE IF EXISTS ivm_st, acc_plain, br_plain, acc_imm, br_imm, acc_ivm, br_ivm;
  FOREACH s IN ARRAY kinds LOOP
    EXECUTE format('CREATE TABLE %I (bid int PRIMARY KEY, bbalance int NOT NULL, filler char(88))',
                   'br_' || s);
    EXECUTE format('INSERT INTO %I SELECT g, 0, '''' FROM generate_series(1, %s) g', 'br_' || s, nbr);
    EXECUTE format('CREATE TABLE %I (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL,
                    filler char(84))', 'acc_' || s);
    EXECUTE format('INSERT INTO %I SELECT g, 1 + (g - 1) / 100000, 0, '''' FROM generate_series(1, %s) g',
                   'acc_' || s, n);
    EXECUTE format('CREATE INDEX ON %I (bid)', 'acc_' || s);
    EXECUTE format('ANALYZE %I, %I', 'acc_' || s, 'br_' || s);
  END LOOP;
  q := CASE st_shape
         WHEN 'join' THEN
           'SELECT a.aid, a.abalance, b.bid, b.bbalance FROM acc_imm a JOIN br_imm b ON b.bid = a.bid'
         ELSE
           'SELECT b.bid, count(*) AS n, sum(a.abalance) AS total FROM acc_imm a JOIN br_imm b ON b.bid = a.bid GROUP BY b.bid'
       END;
  PERFORM pgtrickle.create_stream_table('imm_st', q, refresh_mode => 'IMMEDIATE');
  IF peer THEN
    PERFORM pgivm.create_immv('ivm_st', replace(q, '_imm ', '_ivm '));
  END IF;
  COMMIT;
  FOR i IN 0..singles LOOP   -- i = 0 warms up
    aid_ := 1 + floor(random() * n)::int;
    FOR j IN 0..nk - 1 LOOP
      kind := kinds[1 + (i + j) % nk];
      t0 := clock_timestamp();
      -- Static statements: plans cached as a prepared statement's would be.
      IF kind = 'plain' THEN
        UPDATE acc_plain SET abalance = abalance + 1 WHERE aid = aid_;
      ELSIF kind = 'imm' THEN
        UPDATE acc_imm SET abalance = abalance + 1 WHERE aid = aid_;
      ELSE
        UPDATE acc_ivm SET abalance = abalance + 1 WHERE aid = aid_;
      END IF;
      IF i > 0 THEN
        INSERT INTO bench.result VALUES ('immediate', st_shape || ': single-row UPDATE', n, NULL,
          CASE kind WHEN 'plain' THEN 'plain' WHEN 'imm' THEN 'immediate' ELSE 'pg_ivm' END,
          bench.since(t0));
      END IF;
      COMMIT;
    END LOOP;
  END LOOP;
  FOR i IN 0..reps LOOP
    lo := 1 + floor(random() * (n - k))::int;
    FOR j IN 0..nk - 1 LOOP
      kind := kinds[1 + (i + j) % nk];
      t0 := clock_timestamp();
      EXECUTE format('UPDATE %I SET abalance = abalance + 1 WHERE aid BETWEEN %s AND %s',
                     'acc_' || kind, lo, lo + k - 1);
      IF i > 0 THEN
        INSERT INTO bench.result VALUES ('immediate', st_shape || ': 1 % bulk UPDATE', n, NULL,
          CASE kind WHEN 'plain' THEN 'plain' WHEN 'imm' THEN 'immediate' ELSE 'pg_ivm' END,
          bench.since(t0));
      END IF;
      COMMIT;
    END LOOP;
  END LOOP;
  IF bench.differences('imm_st', q) <> 0 THEN
    RAISE EXCEPTION 'bench: the IMMEDIATE stream table (%) differs from its query', st_shape;
  END IF;
  IF peer AND bench.differences('ivm_st', replace(q, '_imm ', '_ivm ')) <> 0 THEN
    RAISE EXCEPTION 'bench: the pg_ivm IMMV (%) differs from its query', st_shape;
  END IF;
  PERFORM pgtrickle.drop_stream_table('imm_st');
  DROP TABLE IF EXISTS ivm_st, acc_plain, br_plain, acc_imm, br_imm, acc_ivm, br_ivm;
  COMMIT;
END $$;
