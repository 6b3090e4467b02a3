{{ config(materialized='stream_table', schedule='1s', refresh_mode='DIFFERENTIAL') }}
SELECT region, count(*) AS orders, sum(amount) AS revenue
  FROM {{ source('shop', 'orders') }}
 GROUP BY region
