//! Shared generators for the fuzz targets: a fixed catalog (`schema`), structured SELECT
//! queries over it (`sqlgen`), operator trees (`treegen`) and databases with a change window
//! (`scenario`), all driven by libFuzzer's bytes through `arbitrary::Unstructured`, so that
//! coverage guidance reaches deep into the planner, the renderer and the delta rules.

pub mod scenario;
pub mod schema;
pub mod sqlgen;
pub mod treegen;
