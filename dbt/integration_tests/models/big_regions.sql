{{ config(materialized='stream_table') }}
SELECT region, revenue FROM {{ ref('region_totals') }} WHERE orders > 2
