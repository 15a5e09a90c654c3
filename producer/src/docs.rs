//! Realistic documents of about 1 KB, reproducible from a seed: the load generator's,
//! the demo's and the benchmarks' data.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const WORDS: &[&str] = &[
    "river", "ferry", "harbour", "index", "search", "cluster", "shard", "replica", "mapping", "field", "keyword",
    "engine", "lucene", "segment", "merge", "query", "token", "analyzer", "north", "south", "quiet", "rapid", "golden",
    "silver", "market", "order", "invoice", "customer", "parcel", "delivery", "station", "signal", "window", "garden",
    "mountain", "coffee", "paper", "stone", "bridge", "lantern", "harvest", "orbit", "pixel", "vector",
];
const CATEGORIES: &[&str] = &["books", "garden", "tools", "music", "outdoor", "kitchen", "toys", "office"];
const COUNTRIES: &[&str] = &["FR", "DE", "NL", "SE", "JP", "BR", "CA", "IN", "KE", "NZ"];

/// Generates documents; the same seed gives the same sequence.
#[derive(Debug)]
pub struct DocGen {
    rng: StdRng,
}

impl DocGen {
    pub fn new(seed: u64) -> Self {
        DocGen { rng: StdRng::seed_from_u64(seed) }
    }

    fn words(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n * 7);
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[self.rng.random_range(0..WORDS.len())]);
        }
        s
    }

    /// One document as compact JSON, about 1 KB.
    pub fn doc(&mut self, id: &str, revision: u32) -> String {
        let created = 1_700_000_000i64 + self.rng.random_range(0..60_000_000);
        let body_words = self.rng.random_range(95..125);
        let ntags = self.rng.random_range(1..5);
        let tags: Vec<&str> = (0..ntags).map(|_| WORDS[self.rng.random_range(0..WORDS.len())]).collect();
        json!({
            "id": id,
            "title": self.words(6),
            "body": self.words(body_words),
            "category": CATEGORIES[self.rng.random_range(0..CATEGORIES.len())],
            "tags": tags,
            "price": (self.rng.random_range(100..100_000) as f64) / 100.0,
            "quantity": self.rng.random_range(0..500),
            "rating": self.rng.random_range(0..50) as f64 / 10.0,
            "active": self.rng.random_bool(0.8),
            "revision": revision,
            "created_at": chrono::DateTime::from_timestamp(created, 0).map(|t| t.to_rfc3339()),
            "user": {
                "id": format!("u{}", self.rng.random_range(0..50_000)),
                "name": self.words(2),
                "country": COUNTRIES[self.rng.random_range(0..COUNTRIES.len())],
            },
            "location": { "lat": self.rng.random_range(-90.0..90.0), "lon": self.rng.random_range(-180.0..180.0) },
        })
        .to_string()
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

/// Mappings of the generated documents using only core field types (the test
/// distributions lack analysis-common and mapper-extras).
pub fn mappings() -> serde_json::Value {
    json!({
        "properties": {
            "id": { "type": "keyword" },
            "title": { "type": "text" },
            "body": { "type": "text" },
            "category": { "type": "keyword" },
            "tags": { "type": "keyword" },
            "price": { "type": "double" },
            "quantity": { "type": "integer" },
            "rating": { "type": "float" },
            "active": { "type": "boolean" },
            "revision": { "type": "integer" },
            "created_at": { "type": "date" },
            "user": { "properties": { "id": { "type": "keyword" }, "name": { "type": "text" }, "country": { "type": "keyword" } } },
            "location": { "type": "geo_point" }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_about_a_kilobyte_and_reproducible() {
        let mut a = DocGen::new(7);
        let mut b = DocGen::new(7);
        let sizes: Vec<usize> = (0..200).map(|i| a.doc(&i.to_string(), 1).len()).collect();
        let avg = sizes.iter().sum::<usize>() / sizes.len();
        assert!((800..1300).contains(&avg), "average {avg} bytes");
        assert_eq!(DocGen::new(7).doc("x", 1), b.doc("x", 1));
        let v: serde_json::Value = serde_json::from_str(&a.doc("z", 3)).unwrap();
        assert_eq!(v["revision"], 3);
    }
}
