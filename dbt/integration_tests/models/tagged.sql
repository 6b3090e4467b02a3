{{ config(materialized='stream_table', schedule='5s') }}
-- A literal that looks like the package's dollar-quote tag, and a quote: the materialization
-- must pass the query through unchanged.
SELECT id, '$pgt_0$ and ''quoted'''::text AS marker FROM {{ source('shop', 'orders') }} WHERE id < 10
