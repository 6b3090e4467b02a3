{#- A SQL string literal: dollar-quoted with a tag that neither occurs in the text nor could
    run into its end ($pgt_0$, $pgt_1$, ...). -#}
{% macro literal(value) -%}
  {%- set text = value | string -%}
  {%- set n = namespace(i=0) -%}
  {%- for _ in range(1000) -%}
    {%- if ('$pgt_' ~ n.i ~ '$') in text or text.endswith('$pgt_' ~ n.i) -%}
      {%- set n.i = n.i + 1 -%}
    {%- endif -%}
  {%- endfor -%}
  {%- set tag = '$pgt_' ~ n.i ~ '$' -%}
  {{ tag }}{{ text }}{{ tag }}
{%- endmacro %}

{#- The catalog row of stream table schema.identifier (defining_query, schedule,
    refresh_mode), or none. -#}
{% macro stream_table_config(schema, identifier) -%}
  {%- if not execute -%}{{ return(none) }}{%- endif -%}
  {%- set sql -%}
    SELECT defining_query, schedule, refresh_mode FROM pgtrickle.pgt_stream_tables
     WHERE pgt_schema = {{ pg_trickle.literal(schema) }}
       AND pgt_name = {{ pg_trickle.literal(identifier) }}
  {%- endset -%}
  {%- set rows = run_query(sql).rows -%}
  {%- if rows | length == 0 -%}{{ return(none) }}{%- endif -%}
  {{ return({'defining_query': rows[0][0], 'schedule': rows[0][1],
             'refresh_mode': rows[0][2]}) }}
{%- endmacro %}

{#- Refreshes a stream table now (for an operation: dbt run-operation
    pg_trickle.refresh --args '{relation: analytics.orders_by_region}'). -#}
{% macro refresh(relation) -%}
  {% do run_query("SELECT pgtrickle.refresh_stream_table(" ~ pg_trickle.literal(relation) ~ ")") %}
{%- endmacro %}
