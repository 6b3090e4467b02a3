{#-
  The `stream_table` materialization: the model becomes a pg_trickle stream table, kept up to
  date by the extension (pg_trickle 0.35 or later in the target database).

  Model config:
    schedule      'calculated' (default), a duration such as '30s', or a cron expression
    refresh_mode  'AUTO' (default), 'DIFFERENTIAL', 'FULL' or 'IMMEDIATE'
    shadow_build  false (default); true changes the query of an existing stream table by a
                  shadow build (needs pg_trickle.shadow_build_enabled; any new shape)

  First run: pgtrickle.create_stream_table(). Later runs compare the compiled SQL, the
  schedule and the mode with the catalog and call pgtrickle.alter_stream_table() with what
  changed (nothing when nothing did). --full-refresh drops the stream table and creates it
  again: with stream tables that read it, run them in the same invocation
  (`dbt run -s model+ --full-refresh`), or they wait in NEEDS_REINIT for a refresh, and a view
  on it makes the drop fail. A table or view of the same name that is not a stream table is
  dropped first, as dbt's table materialization replaces it.
-#}
{% materialization stream_table, adapter='postgres' %}
  {%- set identifier = model['alias'] -%}
  {%- set target_relation = api.Relation.create(identifier=identifier, schema=schema,
                                                database=database, type='table') -%}
  {%- set existing = adapter.get_relation(database=database, schema=schema,
                                          identifier=identifier) -%}
  {%- set schedule = config.get('schedule', 'calculated') | string -%}
  {%- set refresh_mode = config.get('refresh_mode', 'AUTO') | upper -%}
  {%- set shadow_build = config.get('shadow_build', false) -%}
  {%- set name = target_relation.include(database=false) | string -%}
  {%- set query = sql | trim -%}
  {%- if query.endswith(';') -%}{%- set query = query[:-1] | trim -%}{%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {%- set current = pg_trickle.stream_table_config(schema, identifier) -%}
  {%- if existing is not none and current is none -%}
    {{ adapter.drop_relation(existing) }}
  {%- endif -%}
  {%- if current is not none and should_full_refresh() -%}
    {% call statement('drop_stream_table') -%}
      SELECT pgtrickle.drop_stream_table({{ pg_trickle.literal(name) }})
    {%- endcall %}
    {%- set current = none -%}
  {%- endif -%}

  {% call statement('main') -%}
    {%- if current is none -%}
      SELECT pgtrickle.create_stream_table({{ pg_trickle.literal(name) }},
          {{ pg_trickle.literal(query) }},
          schedule => {{ pg_trickle.literal(schedule) }},
          refresh_mode => {{ pg_trickle.literal(refresh_mode) }})
    {%- else -%}
      {%- set changes = [] -%}
      {%- if current['defining_query'] != query -%}
        {%- do changes.append('query => ' ~ pg_trickle.literal(query)) -%}
        {%- if shadow_build -%}{%- do changes.append('shadow_build => true') -%}{%- endif -%}
      {%- endif -%}
      {%- if current['schedule'] != schedule -%}
        {%- do changes.append('schedule => ' ~ pg_trickle.literal(schedule)) -%}
      {%- endif -%}
      {%- if current['refresh_mode'] != refresh_mode -%}
        {%- do changes.append('refresh_mode => ' ~ pg_trickle.literal(refresh_mode)) -%}
      {%- endif -%}
      {%- if changes -%}
        SELECT pgtrickle.alter_stream_table({{ pg_trickle.literal(name) }}, {{ changes | join(', ') }})
      {%- else -%}
        SELECT {{ pg_trickle.literal('stream table ' ~ name ~ ' unchanged') }}
      {%- endif -%}
    {%- endif -%}
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
