-- The pg_trickle demo scenario, run by ci/demo against a fresh database `demo`.
CREATE EXTENSION pg_trickle;
SELECT pgtrickle.version() AS pg_trickle_version;

-- Two source tables.
CREATE TABLE customers (id int PRIMARY KEY, region text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, amount numeric(10,2) NOT NULL);
INSERT INTO customers VALUES (1, 'emea'), (2, 'americas'), (3, 'apac');
INSERT INTO orders SELECT g, 1 + g % 3, (g % 50) + 0.99 FROM generate_series(1, 10000) g;

-- A join + aggregate stream table, maintained differentially (AUTO picks DIFFERENTIAL).
SELECT pgtrickle.create_stream_table(
  'revenue_by_region',
  $$SELECT c.region, count(*) AS orders, sum(o.amount) AS revenue
      FROM orders o JOIN customers c ON c.id = o.customer_id
     GROUP BY c.region$$);
SELECT region, orders, revenue FROM revenue_by_region ORDER BY region;

-- Writes to both sources: new orders, a deleted order, a customer moving region.
INSERT INTO orders VALUES (10001, 2, 1000.00), (10002, 3, 250.50);
DELETE FROM orders WHERE id = 1;
UPDATE customers SET region = 'emea' WHERE id = 3;

-- Refresh applies only the change, then the stream table equals its query again.
SELECT pgtrickle.refresh_stream_table('revenue_by_region');
SELECT region, orders, revenue FROM revenue_by_region ORDER BY region;
SELECT c.region, count(*) AS orders, sum(o.amount) AS revenue
  FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.region ORDER BY 1;

-- IMMEDIATE: kept current inside every statement that writes a source.
SELECT pgtrickle.create_stream_table(
  'orders_per_customer',
  'SELECT customer_id, count(*) AS orders FROM orders GROUP BY customer_id',
  refresh_mode => 'IMMEDIATE');
INSERT INTO orders VALUES (10003, 1, 5.00);
SELECT customer_id, orders FROM orders_per_customer ORDER BY customer_id;

-- Scheduled: the background scheduler refreshes this one about every second when it changed
-- (its worker for this new database starts within seconds). Wait for it, at most 60 s.
SELECT pgtrickle.create_stream_table(
  'big_orders', 'SELECT id, amount FROM orders WHERE amount > 45', schedule => '1s');
DELETE FROM orders WHERE amount > 49;
DO $$
DECLARE
  waited int := 0;
BEGIN
  WHILE (SELECT count(*) FROM big_orders) <> (SELECT count(*) FROM orders WHERE amount > 45)
        AND waited < 120 LOOP
    PERFORM pg_sleep(0.5);
    waited := waited + 1;
  END LOOP;
END
$$;
SELECT (SELECT count(*) FROM big_orders) AS big_orders_rows,
       (SELECT count(*) FROM orders WHERE amount > 45) AS query_rows;

-- A query the engine cannot maintain differentially: AUTO falls back to FULL and says why.
SELECT pgtrickle.create_stream_table('sampled', 'SELECT id, random() AS r FROM customers');

-- Status and refresh history.
SELECT name, refresh_mode, effective_mode, status, is_populated FROM pgtrickle.pgt_status();
SELECT action, reason, delta_rows FROM pgtrickle.get_refresh_history('revenue_by_region');

-- The same figures the Prometheus endpoint exports (docs/MONITORING.md; the endpoint itself
-- needs pg_trickle.metrics_port and a restart): refreshes per stream table, action and status.
SELECT labels[2] AS stream_table, labels[4] AS action, labels[6] AS status, value AS refreshes
  FROM pgtrickle.pgt_metrics WHERE metric = 'pgtrickle_refreshes_total' ORDER BY 1, 2, 3;
