//! Tools around a migration rather than steps of one: [`plan`], the upgrade assistant that
//! writes a recipe.

pub mod plan;
