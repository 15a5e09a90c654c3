//! What a recipe expands to on the clusters: the pairs its patterns match ([`patterns`]),
//! the index templates carried to the target ([`templates`]), the target indices created
//! without a template's aliases ([`shield`], [`targets`]) and the ingest pipelines they are
//! given at rollover ([`pipelines`]).

pub mod patterns;
pub mod pipelines;
pub mod shield;
pub mod targets;
pub mod templates;
